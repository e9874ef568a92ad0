"""SAE training throughput, in tokens/s: featscale's SAEs against SAELens's own training step.

Both sides train an SAE of the same architecture, d_in, latent count and batch, in this one
process, on the same synthetic activations served in the same batch order, with the same
initial weights, learning rate, Adam betas and torch threads. Cases: TopK (same k) and Gated.

featscale's step is sae_train.train_sae's, minus logging and the lr schedule (constant lr):
    out = sae(x, dead_mask=tracker.dead_mask)
    loss = out.mse + l1_factor * out.sparsity_loss + out.aux_loss   (+ its isfinite check)
    backward; [topk: remove_parallel_gradient]; Adam step; [topk: normalize_decoder]
    tracker.update(out.latents)
SAELens's step is `SAETrainer.step(batch)`, the public per-batch seam its own `fit()` loop
calls: activation scaler, `training_forward_pass(TrainStepInput(...))`, the fired-latent
bookkeeping that feeds its dead-neuron mask, backward, clip_grad_norm_(1.0), Adam step,
lr and coefficient schedulers. The trainer is built with no wandb, no model and no data
provider: the activations are fed directly. `--saelens-step bare` times only
training_forward_pass + backward + Adam instead, a lower bound on SAELens's cost.

The activations are sparse non-negative combinations of a random unit-norm dictionary, plus
a shared offset and Gaussian noise, so reconstruction quality (FVU) means something. Each
side takes `--warmup` untimed steps, then `--rounds` rounds of `--steps` timed steps,
the side that goes first alternating every round; every step is timed on its own, and
tokens/s is batch / the median step of all rounds (on a shared machine, bursts of other
work lengthen a few steps, which would skew a mean). After the rounds both sides have
seen the same batches; FVU and L0 are measured on the same held-out vectors. At the
defaults that is early training (139k tokens): FVU there says more about how fast each
recipe starts than about where it ends; raise --steps (or shrink --latents/--batch) for more.
Both steps clip the gradient norm to 1.0 by default, as sae_train does with the spec's
grad_clip; --ours-clip-grad-norm 0 switches ours off to see what clipping alone does to FVU.

    python benchmarks/sae_throughput.py                  # CPU defaults, ~2-4 min on 2 shared cores
    python benchmarks/sae_throughput.py --cases topk --rounds 2 --steps 20
    python benchmarks/sae_throughput.py --device cuda --d-in 768 --latents 24576 --steps 100
    python benchmarks/sae_throughput.py --cases topk --profile 5   # where the time goes
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

CASES = ("topk", "gated")
SIDES = ("featscale", "saelens")
TARGET_RATIO = 1.5


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


# ---------------------------------------------------------------- data


def synthetic_activations(args: argparse.Namespace) -> tuple[Any, Any]:
    """(train (n_train, d_in), held-out (n_held, d_in)) float32 vectors, on CPU, from --seed.

    x = Σ_j m_j · a_{i_j} + offset + noise: `--active` atoms per vector, drawn with
    Zipf-like frequencies from `--features` random unit-norm atoms, with exponential
    magnitudes; the offset gives b_dec something to learn.
    """
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(args.seed)
    atoms = torch.randn(args.features, args.d_in, generator=g)
    atoms /= atoms.norm(dim=1, keepdim=True)
    frequency = torch.arange(1, args.features + 1, dtype=torch.float64).pow(-0.8)
    frequency = frequency[torch.randperm(args.features, generator=g)]  # no index order bias
    offset = torch.randn(args.d_in, generator=g)

    def draw(n: int) -> torch.Tensor:
        indices = torch.multinomial(frequency, n * args.active, replacement=True, generator=g).view(n, args.active)
        magnitudes = torch.empty(n, args.active).exponential_(1.0, generator=g)
        x = F.embedding_bag(indices, atoms, per_sample_weights=magnitudes, mode="sum")
        return x + offset + args.noise * torch.randn(n, args.d_in, generator=g)

    return draw(args.train_vectors), draw(args.held_vectors)


# ---------------------------------------------------------------- the two sides


@dataclass
class Side:
    """One side of one case: a step function, an evaluation function, and its step times."""

    name: str
    step: Callable[[Any, int], None]  # (batch, global step index)
    reconstruct: Callable[[Any], Any]  # held-out batch (original units) -> reconstruction, codes
    dead: Callable[[], int]  # latents the side's own tracker counts as dead now
    seconds: list[list[float]] = field(default_factory=list)  # per round


def l1_factor_at(step: int, warmup_steps: int) -> float:
    """featscale's sparsity warm-up factor (sae_train.schedule): linear over warmup_steps."""
    return 1.0 if warmup_steps == 0 else min(1.0, (step + 1) / warmup_steps)


def build_featscale(case: str, args: argparse.Namespace, input_scale: float, sample: Any, device: Any) -> tuple[Side, Any]:
    import torch

    from featscale.saes.base import DeadLatentTracker, SAEConfig, make_sae

    topk = case == "topk"
    config = SAEConfig(
        architecture=case,
        d_in=args.d_in,
        n_latents=args.latents,
        k=args.k if topk else None,
        l1_coefficient=None if topk else args.l1,
        # SAELens's GatedTrainingSAE trains the decoder through the auxiliary loss too (the paper
        # freezes it there, featscale's default); compare like with like unless asked otherwise
        gated_aux_trains_decoder=not topk and args.gated_aux == "saelens",
        dead_after_tokens=args.dead_after_tokens,
        input_scale=input_scale,
    )
    torch.manual_seed(args.seed + 1)
    sae = make_sae(config)
    sae.init_from_data(sample, "mean")  # b_dec = data mean, in scaled units
    sae = sae.to(device).train()
    optimizer = torch.optim.Adam(sae.parameters(), lr=args.lr, betas=(args.beta1, args.beta2))
    tracker = DeadLatentTracker(config.n_latents, config.dead_after_tokens, device=device)

    def step(x: torch.Tensor, index: int) -> None:
        out = sae(x, dead_mask=tracker.dead_mask)
        loss = out.mse + l1_factor_at(index, args.l1_warmup_steps) * out.sparsity_loss + out.aux_loss
        if not torch.isfinite(loss):  # sae_train does this check every step
            raise FloatingPointError(f"featscale {case} loss is {float(loss)} at step {index}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if topk:
            sae.remove_parallel_gradient()
        if args.ours_clip_grad_norm:  # sae_train clips with the spec's grad_clip (1.0 by default)
            torch.nn.utils.clip_grad_norm_(sae.parameters(), args.ours_clip_grad_norm)
        optimizer.step()
        if topk:
            sae.normalize_decoder()
        tracker.update(out.latents)

    @torch.no_grad()
    def reconstruct(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = sae(x)
        return out.reconstruction, out.latents

    return Side("featscale", step, reconstruct, lambda: int(tracker.dead_mask.sum())), sae


def build_saelens(case: str, args: argparse.Namespace, input_scale: float, ours: Any, device: Any) -> Side:
    import torch
    from sae_lens import (
        GatedTrainingSAE,
        GatedTrainingSAEConfig,
        LoggingConfig,
        SAETrainer,
        TopKTrainingSAE,
        TopKTrainingSAEConfig,
    )
    from sae_lens.config import SAETrainerConfig
    from sae_lens.saes.sae import TrainStepInput

    common = dict(
        d_in=args.d_in,
        d_sae=args.latents,
        dtype="float32",
        device=str(device),
        apply_b_dec_to_input=True,  # as ours: b_dec is subtracted before encoding
        # SAELens's equivalent of our input_scale: its ActivationScaler multiplies each batch
        # by a scaling factor; we set that factor to ours below instead of letting it estimate one
        normalize_activations="expected_average_only_in",
    )
    if case == "topk":
        cfg = TopKTrainingSAEConfig(
            **common,
            k=args.k,
            # SAELens's default: pre-activations and codes are rescaled by decoder norms,
            # its way to train as if decoder rows were unit norm (ours renormalises them)
            rescale_acts_by_decoder_norm=True,
            # ours' AuxK weight. Not an exact equivalent: ours divides the AuxK error by the
            # residual's variance (Gao et al.), SAELens does not. Moot unless latents die.
            aux_loss_coefficient=ours.config.aux_coefficient,
        )
        sae = TopKTrainingSAE(cfg)
    else:
        # the l1 warm-up ours does (l1_factor) is SAELens's coefficient scheduler
        cfg = GatedTrainingSAEConfig(**common, l1_coefficient=args.l1, l1_warm_up_steps=args.l1_warmup_steps)
        sae = GatedTrainingSAE(cfg)
    with torch.no_grad():  # the same starting point as ours (both work in scaled units)
        sae.W_enc.copy_(ours.W_enc)
        sae.W_dec.copy_(ours.W_dec)
        sae.b_dec.copy_(ours.b_dec)
        if case == "topk":
            sae.b_enc.copy_(ours.b_enc)
        else:
            sae.b_gate.copy_(ours.b_enc)
            sae.r_mag.copy_(ours.r_mag)
            sae.b_mag.copy_(ours.b_mag)
    sae = sae.to(device)

    total_steps = args.warmup + args.rounds * args.steps + args.profile
    trainer = SAETrainer(
        cfg=SAETrainerConfig(
            total_training_samples=total_steps * args.batch,
            train_batch_size_samples=args.batch,
            lr=args.lr,
            lr_end=args.lr,  # LanguageModelSAERunnerConfig sets this in its post-init; constant lr here
            lr_scheduler_name="constant",
            adam_beta1=args.beta1,
            adam_beta2=args.beta2,
            device=str(device),
            autocast=False,
            # ours: dead once silent for >= dead_after_tokens tokens, i.e. ceil(D / batch) steps;
            # SAELens: dead once silent for > dead_feature_window steps
            dead_feature_window=max(0, math.ceil(args.dead_after_tokens / args.batch) - 1),
            feature_sampling_window=10**9,  # its sparsity-log window: never within this run
            n_checkpoints=0,
            logger=LoggingConfig(log_to_wandb=False),
        ),
        sae=sae,
        data_provider=iter(()),  # unused: we feed batches to trainer.step ourselves
    )
    trainer.activation_scaler.scaling_factor = input_scale

    if args.saelens_step == "trainer":

        def step(x: torch.Tensor, index: int) -> None:
            # what one iteration of SAETrainer.fit does, minus wandb, pbar and checkpoints
            trainer.step(x)
            trainer.n_training_steps += 1

    else:
        optimizer = trainer.optimizer

        def step(x: torch.Tensor, index: int) -> None:
            output = sae.training_forward_pass(
                TrainStepInput(
                    sae_in=trainer.activation_scaler(x),
                    coefficients=trainer.get_coefficients(),
                    dead_neuron_mask=None,
                    n_training_steps=index,
                    is_logging_step=False,
                )
            )
            output.loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            for scheduler in trainer.coefficient_schedulers.values():
                scheduler.step()

    @torch.no_grad()
    def reconstruct(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        codes = sae.encode(x * input_scale)
        return sae.decode(codes) / input_scale, codes

    return Side("saelens", step, reconstruct, lambda: int(trainer.dead_neurons.sum()))


# ---------------------------------------------------------------- running


def run_case(case: str, args: argparse.Namespace, train: Any, held: Any, device: Any) -> dict[str, Any]:
    import torch

    from featscale.saes.base import SparseAutoencoder, fraction_of_variance_unexplained

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    input_scale = SparseAutoencoder.input_scale_for(train[: args.bias_init_vectors])
    ours_side, ours = build_featscale(case, args, input_scale, train[: args.bias_init_vectors].cpu(), device)
    sides = {"featscale": ours_side, "saelens": build_saelens(case, args, input_scale, ours, device)}
    del ours
    batches_per_epoch = train.shape[0] // args.batch
    next_step = dict.fromkeys(SIDES, 0)

    def batch(index: int) -> torch.Tensor:
        i = index % batches_per_epoch
        return train[i * args.batch : (i + 1) * args.batch]

    def run(side: str, n: int, timed: list[float] | None) -> None:
        for _ in range(n):
            index = next_step[side]
            x = batch(index)
            sync()
            start = time.perf_counter()
            sides[side].step(x, index)
            sync()
            if timed is not None:
                timed.append(time.perf_counter() - start)
            next_step[side] += 1

    for side in SIDES:
        run(side, args.warmup, None)
    for r in range(args.rounds):
        for side in SIDES if r % 2 == 0 else reversed(SIDES):
            seconds: list[float] = []
            run(side, args.steps, seconds)
            sides[side].seconds.append(seconds)
            print(f"  {case:<5} round {r + 1} {side:<9} {args.batch / statistics.median(seconds):>10,.0f} tokens/s",
                  flush=True)
    if args.profile:
        for side in SIDES:
            profile(case, side, lambda s=side: run(s, args.profile, None), args)
    assert next_step["featscale"] == next_step["saelens"]

    result: dict[str, Any] = {"steps": next_step["featscale"]}
    for side in SIDES:
        reconstructions, active = [], 0.0
        for start in range(0, held.shape[0], args.batch):
            x_hat, codes = sides[side].reconstruct(held[start : start + args.batch])
            reconstructions.append(x_hat)
            active += float((codes > 0).sum())
        fvu = float(fraction_of_variance_unexplained(held, torch.cat(reconstructions)))
        all_seconds = [t for run_ in sides[side].seconds for t in run_]
        result[side] = {
            "tokens_per_s": args.batch / statistics.median(all_seconds),
            "per_round": [args.batch / statistics.median(s) for s in sides[side].seconds],
            "fvu": fvu,
            "l0": active / held.shape[0],
            "dead": sides[side].dead(),
        }
    return result


def profile(case: str, side: str, work: Callable[[], None], args: argparse.Namespace) -> None:
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with torch_profile(activities=activities) as prof:
        work()
    sort = "self_cuda_time_total" if args.device.startswith("cuda") else "self_cpu_time_total"
    print(f"\n--- profile: {case} {side}, {args.profile} steps, by self time ---")
    print(prof.key_averages().table(sort_by=sort, row_limit=args.profile_rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--d-in", type=int, default=128)
    parser.add_argument("--latents", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=4096, help="tokens per step")
    parser.add_argument("--k", type=int, default=32, help="TopK: latents active per token")
    parser.add_argument("--l1", type=float, default=2.0, help="Gated: l1 coefficient (config.yaml's)")
    parser.add_argument("--l1-warmup-steps", type=int, default=0, help="Gated: linear l1 warm-up, both sides")
    parser.add_argument("--dead-after-tokens", type=int, default=10_000_000,
                        help="silent this long = dead (feeds AuxK); featscale's default")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--beta1", type=float, default=0.9)
    parser.add_argument("--beta2", type=float, default=0.999)
    parser.add_argument("--steps", type=int, default=16, help="timed steps per side per round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per side before the rounds")
    parser.add_argument("--rounds", type=int, default=2, help="rounds, the side going first alternating")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--device", default="cuda" if _cuda_available() else "cpu")
    parser.add_argument("--saelens-step", choices=("trainer", "bare"), default="trainer",
                        help="trainer: SAETrainer.step; bare: training_forward_pass + backward + Adam only")
    parser.add_argument("--ours-clip-grad-norm", type=float, default=1.0, metavar="NORM",
                        help="clip featscale's gradient norm (sae_train's default grad_clip, and "
                             "SAETrainer's: 1.0); 0 switches it off")
    parser.add_argument("--gated-aux", choices=("saelens", "paper"), default="saelens",
                        help="featscale's gated auxiliary loss: saelens (trains the decoder, as SAELens) "
                             "or paper (frozen decoder copy, featscale's default)")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="after the rounds, profile N more steps of each side (they train both equally)")
    parser.add_argument("--profile-rows", type=int, default=15)
    # data
    parser.add_argument("--train-vectors", type=int, default=200_000)
    parser.add_argument("--held-vectors", type=int, default=20_000)
    parser.add_argument("--features", type=int, default=None, help="true dictionary size (default: --latents)")
    parser.add_argument("--active", type=int, default=16, help="true atoms per vector")
    parser.add_argument("--noise", type=float, default=0.05, help="noise std per dimension")
    parser.add_argument("--bias-init-vectors", type=int, default=20_000, help="for input scale and b_dec")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.features is None:
        args.features = args.latents
    if args.train_vectors < args.batch:
        parser.error("--train-vectors must hold at least one --batch")

    import sae_lens
    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    args.threads = torch.get_num_threads()
    device = torch.device(args.device)
    train, held = synthetic_activations(args)
    train, held = train.to(device), held.to(device)
    steps_total = args.warmup + args.rounds * args.steps + args.profile
    print(f"torch {torch.__version__}, sae_lens {sae_lens.__version__}; device {device} (fp32), "
          f"torch threads {args.threads} (both sides, one process)")
    print(f"d_in {args.d_in}, latents {args.latents}, batch {args.batch}, k {args.k} (topk), "
          f"l1 {args.l1} warm-up {args.l1_warmup_steps} steps (gated), lr {args.lr}, "
          f"dead after {args.dead_after_tokens:,} tokens")
    print(f"data: {args.train_vectors:,} train + {args.held_vectors:,} held-out vectors, {args.features} true atoms, "
          f"{args.active} active, noise {args.noise}")
    if args.ours_clip_grad_norm:
        print(f"featscale step: gradient norm clipped to {args.ours_clip_grad_norm}, as sae_train does")
    print(f"SAELens step: {args.saelens_step}; {args.warmup} warm-up + {args.rounds} x {args.steps} timed steps "
          f"per side = {steps_total * args.batch:,} training tokens each\n", flush=True)

    results = {case: run_case(case, args, train, held, device) for case in args.cases}

    print(f"\n{'case':<6} {'side':<10} {'tokens/s':>10} {'per round':>19} {'FVU':>7} {'L0':>7} {'dead':>5} {'ours/SAELens':>13}")
    for case, result in results.items():
        ratio = result["featscale"]["tokens_per_s"] / result["saelens"]["tokens_per_s"]
        for side in SIDES:
            r = result[side]
            spread = f"{min(r['per_round']):,.0f}-{max(r['per_round']):,.0f}"
            tail = f"{ratio:>12.2f}x" if side == "featscale" else ""
            print(f"{case:<6} {side:<10} {r['tokens_per_s']:>10,.0f} {spread:>19} {r['fvu']:>7.4f} "
                  f"{r['l0']:>7.1f} {r['dead']:>5} {tail}")
    print(f"\nFVU and L0 on the same {args.held_vectors:,} held-out vectors after {steps_total * args.batch:,} "
          f"training tokens per side; SAELens {sae_lens.__version__} ({args.saelens_step} step"
          f"{', clips gradient norm to 1.0' if args.saelens_step == 'trainer' else ''}); featscale "
          f"{'clips to ' + str(args.ours_clip_grad_norm) if args.ours_clip_grad_norm else 'does not clip'}.")
    for case, result in results.items():
        ours, theirs = result["featscale"], result["saelens"]
        ratio = ours["tokens_per_s"] / theirs["tokens_per_s"]
        verdict = "meets" if ratio >= TARGET_RATIO else "misses"
        quality = "no worse" if ours["fvu"] <= theirs["fvu"] * 1.01 else "WORSE"
        print(f"{case}: {ratio:.2f}x SAELens {verdict} the {TARGET_RATIO}x target; FVU {ours['fvu']:.4f} vs "
              f"{theirs['fvu']:.4f} ({quality}, 1% tolerance)")


if __name__ == "__main__":
    main()
