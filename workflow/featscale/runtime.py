"""What every rule's script does first: send its output to the rule's log, use its threads."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path


def log_to(path: str | Path) -> None:
    """Send logging, progress bars (stderr) and prints (stdout) of this job to its log file."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    stream = open(path, "a", buffering=1)  # line-buffered: a killed job leaves its last lines
    sys.stdout = sys.stderr = stream
    logging.basicConfig(
        stream=stream,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )


def set_threads(threads: int) -> None:
    """Make the job use exactly the cores Snakemake gave it.

    The Rust thread pool of `tokenizers` reads RAYON_NUM_THREADS once, on first use, so
    this must run before any tokenization; torch is told only if it is already loaded.
    """
    os.environ["RAYON_NUM_THREADS"] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
