"""What every job does: send its output to the rule's log, use its threads, stop cleanly on SIGTERM,
and end on a known failure with one line on the console (the traceback goes to the log)."""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import signal
import sys
import traceback
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from featscale.io import InputError


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


def start_job(log: str | Path, threads: int = 1) -> None:
    """What a rule's script does first, before importing the libraries that read the thread count."""
    log_to(log)
    set_threads(threads)


def set_threads(threads: int) -> None:
    """Make the job use exactly the cores Snakemake gave it.

    The Rust thread pool of `tokenizers` reads RAYON_NUM_THREADS once, on first use, so
    this must run before any tokenization; torch is told only if it is already loaded.
    """
    os.environ["RAYON_NUM_THREADS"] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


class StopRequested:
    """Notes SIGTERM (what SLURM sends before preempting or timing out a job) instead of dying,
    so a training loop can write a checkpoint at its next step and then exit."""

    def __init__(self) -> None:
        self.requested = False
        signal.signal(signal.SIGTERM, self._note)

    def _note(self, signum: int, frame: object) -> None:
        logging.getLogger(__name__).warning("SIGTERM received: checkpointing and stopping")
        self.requested = True


class Stopped(SystemExit):
    """Raised after the checkpoint that a SIGTERM asked for: the job ends as failed (143),
    so Snakemake or SLURM retries it, and the retry resumes."""

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGTERM)


def run_rule(job: Any, target: str) -> Any:
    """What a rule's script does: start the job (its log, its threads), then call `target`
    ("package.module:function") with its arguments taken from the job by name.

    A parameter named like one of the rule's params, inputs, outputs or wildcards gets that
    value (in that order of precedence: an input `a` wins over a wildcard `a`); `inputs` and
    `outputs` get all of them (name -> path), `out` the first output, `workers` the job's threads. A parameter annotated with a settings class
    (featscale.config.Section) is rebuilt from the plain data the rule passed. So a rule's
    params are its function's keyword arguments, and a rule that misses one fails at once,
    naming it.

    A known failure (featscale.io.InputError: a corrupt artifact, a bad corpus file, a config the
    data cannot satisfy) ends the job with its message on the console, one line per problem, and
    the traceback in the log; any other error, a bug, shows its traceback in both.
    """
    start_job(job.log[0], job.threads)
    module, _, name = target.partition(":")
    try:
        function = getattr(importlib.import_module(module), name)
        return function(**job_arguments(function, job))
    except InputError as error:
        logging.getLogger(module).error("%s", error, exc_info=True)
        print(f"Error in rule {job.rule}: {error}", file=sys.__stderr__, flush=True)
        raise SystemExit(1) from None
    except Exception:
        traceback.print_exc(file=sys.__stderr__)
        raise


def job_arguments(function: Callable[..., Any], job: Any) -> dict[str, Any]:
    """The keyword arguments of `function` from a Snakemake job (see run_rule)."""
    from featscale.config import Section

    hints = typing.get_type_hints(function)
    sources = {
        "inputs": dict(job.input.items()),
        "outputs": dict(job.output.items()),
        "out": job.output[0] if len(job.output) else None,
        "workers": job.threads,
    }
    for named in (job.wildcards, job.output, job.input, job.params):  # later ones win
        sources.update(named.items())
    arguments = {}
    for name, parameter in inspect.signature(function).parameters.items():
        if name not in sources:
            if parameter.default is inspect.Parameter.empty:
                raise TypeError(
                    f"{function.__module__}.{function.__name__} needs `{name}`, which the rule gives as none "
                    f"of its params, wildcards, inputs or outputs: add it to the rule"
                )
            continue
        value = sources[name]
        hint = hints.get(name)
        if isinstance(hint, type) and issubclass(hint, Section):
            value = hint.from_dict(value)
        arguments[name] = value
    return arguments
