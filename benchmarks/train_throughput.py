"""Training throughput of featscale's GPT against transformers' GPT2LMHeadModel, in tokens/s.

One training step is forward + loss + backward + AdamW step on a fixed random batch,
fp32 on CPU, bf16 autocast on CUDA. Both models have the same configuration (exact
GELU, no dropout, SDPA attention, no KV cache), the same batch, the same loss call
(F.cross_entropy on the logits) and the same torch threads. Each measurement runs in a
fresh process, so that its peak memory is its own; the two models alternate, `--rounds`
times each, the order flipping every round. Every timed step is timed on its own, and
tokens/s is tokens per step over the median step of all rounds: on a shared machine,
bursts of other work lengthen a few steps, which would skew a mean. Memory on CPU is the
process's peak RSS (both processes import torch and transformers) and its rise over the
RSS just before the first step; on CUDA, torch.cuda.max_memory_allocated.

    python benchmarks/train_throughput.py                           # CPU defaults, ~1-2 min on 2 cores
    python benchmarks/train_throughput.py --device cuda --width 768 --context 512 --batch 32
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

MODELS = ("featscale", "transformers")


def rss_bytes() -> int:
    """This process's resident memory now (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def build(kind: str, args: argparse.Namespace) -> tuple[Any, Callable[[Any, Any, Any], Any]]:
    """The model to time, and a function of (model, ids, targets) giving the loss."""
    import torch.nn.functional as F

    if kind == "featscale":
        from featscale.models.gpt import GPT, GPTConfig

        model = GPT(GPTConfig(args.vocab, args.context, args.width, args.layers, args.head_size))
        return model, lambda m, x, y: m(x, y).loss

    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=args.vocab, n_positions=args.context, n_embd=args.width, n_layer=args.layers,
        n_head=args.width // args.head_size, activation_function="gelu", layer_norm_epsilon=1e-5,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True,
        bos_token_id=None, eos_token_id=None,  # GPT-2's 50256 may be outside a small vocab
        use_cache=False,  # training: building a KV cache would be wasted work
        attn_implementation="sdpa",
    )
    model = GPT2LMHeadModel(config)
    assert model.config._attn_implementation == "sdpa", model.config._attn_implementation

    def loss(m, x, y):
        logits = m(input_ids=x).logits
        return F.cross_entropy(logits.flatten(0, 1), y.flatten())

    return model, loss


def worker(args: argparse.Namespace) -> None:
    """Time one model in this process; print a JSON line."""
    import torch
    import transformers  # noqa: F401  both sides import it, so their baseline memory is the same

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model, loss_fn = build(args.worker, args)
    model.to(device).train()
    step_fn = torch.compile(model) if args.compile else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
    data = torch.randint(0, args.vocab, (args.batch, args.context + 1), device=device)
    x, y = data[:, :-1].contiguous(), data[:, 1:].contiguous()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()

    def step() -> None:
        with autocast:
            loss = loss_fn(step_fn, x, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    rss_before = rss_bytes()
    for _ in range(args.warmup):  # first steps allocate optimizer state, pick kernels, compile
        step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        sync()
        seconds.append(time.perf_counter() - start)
    result = {
        "step_seconds": seconds,
        "params": sum(p.numel() for p in model.parameters()),
        "max_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # KiB on Linux
        "rss_increase": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before,
    }
    if device.type == "cuda":
        result["cuda_peak"] = torch.cuda.max_memory_allocated()
    print(json.dumps(result))


def measure(kind: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--worker", kind]
    for name in ("width", "layers", "head_size", "context", "vocab", "batch", "steps", "warmup", "device", "threads"):
        command += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    if args.compile:
        command.append("--compile")
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{kind} run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def flops_per_token(args: argparse.Namespace) -> float:
    """Training FLOPs per token: 6·N for the matmuls, plus attention's scores and mixing.

    N counts the non-embedding weights and the LM head (a real matmul; the embedding
    lookups are not). Attention is 2·2·T·width per layer forward, ×3 with backward,
    counted in full despite the causal mask, as in PaLM's MFU.
    """
    n = 12 * args.layers * args.width**2 + args.vocab * args.width
    return 6 * n + 12 * args.layers * args.width * args.context


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--head-size", type=int, default=64)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=12, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before them")
    parser.add_argument("--rounds", type=int, default=3, help="measurements of each model, alternating")
    parser.add_argument("--device", default="cuda" if _cuda_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--compile", action="store_true", help="torch.compile both models")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="for MFU on CUDA; H100 bf16 dense")
    parser.add_argument("--worker", choices=MODELS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads is None:
        import torch

        args.threads = torch.get_num_threads()
    if args.worker:
        return worker(args)

    import torch
    import transformers

    tokens = args.batch * args.context
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    print(f"width {args.width}, {args.layers} layers, head size {args.head_size}, context {args.context}, "
          f"vocab {args.vocab}; batch {args.batch} x {args.context} = {tokens} tokens/step")
    print(f"device {args.device} ({'bf16 autocast' if args.device.startswith('cuda') else 'fp32'}), "
          f"torch threads {args.threads}, compile {args.compile}; {args.warmup} warmup + {args.steps} timed "
          f"steps per measurement, {args.rounds} rounds alternating\n")
    runs: dict[str, list[dict]] = {kind: [] for kind in MODELS}
    for r in range(args.rounds):
        for kind in MODELS if r % 2 == 0 else reversed(MODELS):
            runs[kind].append(measure(kind, args))
            median = statistics.median(runs[kind][-1]["step_seconds"])
            print(f"  round {r + 1} {kind:<13} {tokens / median:>10,.0f} tokens/s (median step)", flush=True)
    report(runs, args)


def report(runs: dict[str, list[dict]], args: argparse.Namespace) -> None:
    """The table: tokens/s from the median step of all rounds, memory, and on CUDA the MFU."""
    tokens = args.batch * args.context
    cuda = args.device.startswith("cuda")
    mib = 2**20
    rate = {kind: tokens / statistics.median(t for run in runs[kind] for t in run["step_seconds"]) for kind in MODELS}
    header = f"\n{'model':<14} {'params':>10} {'tokens/s':>10} {'rounds range':>17}"
    header += f" {'peak CUDA MiB':>14} {'MFU':>6}" if cuda else f" {'max RSS MiB':>12} {'RSS rise MiB':>13}"
    print(header)
    for kind in MODELS:
        per_round = [tokens / statistics.median(run["step_seconds"]) for run in runs[kind]]
        line = f"{kind:<14} {runs[kind][0]['params']:>10,} {rate[kind]:>10,.0f}"
        line += f" {min(per_round):>8,.0f}-{max(per_round):<8,.0f}"
        if cuda:
            mfu = rate[kind] * flops_per_token(args) / (args.peak_tflops * 1e12)
            line += f" {max(run['cuda_peak'] for run in runs[kind]) / mib:>14,.0f} {mfu:>6.1%}"
        else:
            line += f" {max(run['max_rss'] for run in runs[kind]) / mib:>12,.0f}"
            line += f" {max(run['rss_increase'] for run in runs[kind]) / mib:>13,.0f}"
        print(line)
    print(f"\nratio featscale / transformers: {rate['featscale'] / rate['transformers']:.3f} (target >= 1.0)")


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    main()
