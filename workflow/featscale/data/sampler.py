"""Training batches from the token store, identical for every model of a run.

Batch `step` is a function of (seed, step) alone: every width sees the same windows in
the same order, and resuming at step s needs no state but s.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from featscale.data.token_store import TokenSplit

IN_MEMORY_BYTES = 2**31


class BatchSampler:
    """Random windows of `context + 1` tokens (inputs and their next-token targets)."""

    def __init__(
        self,
        tokens: TokenSplit | np.ndarray,
        context: int,
        batch_size: int,
        seed: int,
        in_memory_bytes: int = IN_MEMORY_BYTES,
    ):
        n_tokens = tokens.shape[0]
        if n_tokens < context + 1:
            raise ValueError(f"{n_tokens} tokens cannot fill one window of {context + 1}")
        # small splits are read once; large ones are read a batch at a time, chunk by chunk
        small = n_tokens * tokens.dtype.itemsize <= in_memory_bytes
        self.tokens = tokens[:] if small and not isinstance(tokens, np.ndarray) else tokens
        self.context, self.batch_size, self.seed = context, batch_size, seed
        self.n_starts = n_tokens - context  # a window starts anywhere it fits

    def starts(self, step: int) -> np.ndarray:
        """First token of each window of batch `step`: (batch_size,)."""
        rng = np.random.default_rng([self.seed, step])
        return rng.integers(0, self.n_starts, size=self.batch_size)

    def batch(self, step: int) -> np.ndarray:
        """Batch `step` as int64 token ids: (batch_size, context + 1)."""
        index = self.starts(step)[:, None] + np.arange(self.context + 1)  # (B, T+1)
        if isinstance(self.tokens, np.ndarray):
            ids = self.tokens[index]
        else:
            ids = self.tokens.get_coordinate_selection(index.ravel()).reshape(index.shape)
        return ids.astype(np.int64)

    def __iter__(self) -> Iterator[np.ndarray]:
        return self.iter_from(0)

    def iter_from(self, step: int) -> Iterator[np.ndarray]:
        """Batches step, step + 1, ... (what a resumed training loop continues with)."""
        while True:
            yield self.batch(step)
            step += 1


def heldout_windows(tokens: TokenSplit | np.ndarray, n_tokens: int, context: int) -> np.ndarray:
    """The first `n_tokens` of a split as consecutive, non-overlapping windows of
    `context + 1` tokens: (n_tokens // (context + 1), context + 1), int64.

    Every model is evaluated on exactly these windows, so losses compare across widths.
    """
    n_windows = n_tokens // (context + 1)
    if n_windows < 1 or n_windows * (context + 1) > tokens.shape[0]:
        raise ValueError(
            f"{n_tokens} held-out tokens of a split of {tokens.shape[0]} do not make a whole "
            f"number (at least 1) of windows of {context + 1}"
        )
    flat = np.asarray(tokens[: n_windows * (context + 1)], dtype=np.int64)
    return flat.reshape(n_windows, context + 1)
