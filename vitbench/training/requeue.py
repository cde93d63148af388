"""Stopping a run with a checkpoint: SLURM preemption of packed jobs, and SIGTERM/SIGINT.

Packed jobs (``resources.runs_per_device`` > 1).

Lightning's own SLURM requeue (on SIGUSR1 each run saves ``hpc_ckpt_N.ckpt``,
then runs ``scontrol requeue``) requeues the whole job: in a job holding
several runs, the first to requeue would kill the others, maybe before they
saved. So when the batch script owns the requeue (``VITBENCH_REQUEUE=batch``,
set by the packed sbatch script), Lightning's is switched off and a run
instead saves its checkpoint at the next training-batch end after SIGUSR1 and
exits with :data:`REQUEUE_EXIT`; the script waits for every run, then requeues
the job once. The requeued job resumes each run from its newest
``hpc_ckpt_N.ckpt`` (``vitbench.training.run``).

SIGTERM and SIGINT (``kill``, Ctrl-C, ``vitbench sweep run`` stopping its tasks) take the same
path: during training the run saves ``hpc_ckpt_N.ckpt`` at the next batch boundary and exits
with ``128 + signal`` and a one-line message; rerunning the same command resumes from it. Outside
training (before the first step, during the test) there is nothing new to save, and the run exits
at once. Left to Lightning where Lightning owns them: under its SLURM auto-requeue, and in DDP
jobs (the ranks would have to agree on the batch to stop at).
"""

from __future__ import annotations

import os
import re
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

ENV = "VITBENCH_REQUEUE"
REQUEUE_EXIT = 75  # EX_TEMPFAIL: saved, to be continued by the requeued job

_signalled = False
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_stop: int | None = None  # the first SIGTERM/SIGINT received, while stop_on_signal() is active
_stops = 0
_training = False  # a step may run: a stop waits for the next batch boundary
_active = False  # inside stop_on_signal()


def batch_requeue() -> bool:
    """Whether the batch script, not Lightning, requeues this run's job."""
    return os.environ.get(ENV) == "batch"


def install_handler() -> None:
    """Remember SIGUSR1 instead of dying of it (its default action); idempotent.

    Called as early as possible (``sweep run-task``): the batch script may
    forward the signal while the run is still starting.
    """
    signal.signal(signal.SIGUSR1, _on_usr1)


def _on_usr1(signum, frame) -> None:
    global _signalled
    _signalled = True


def _signal_name(signum: int) -> str:
    return signal.Signals(signum).name


def _on_stop(signum, frame) -> None:
    global _stop, _stops
    _stops += 1
    if _stop is None:
        _stop = signum
    # A repeated signal is the same request (Ctrl-C reaches a sweep's tasks from the terminal and
    # from `sweep run`), unless it is the third: then the user wants out now, checkpoint or not.
    if not _training or _stops >= 3:
        print(f"vitbench: interrupted by {_signal_name(signum)}: rerun the same command to resume "
              "from the last checkpoint", file=sys.stderr, flush=True)
        raise SystemExit(128 + signum)


@contextmanager
def stop_on_signal(enabled: bool = True):
    """While active, SIGTERM/SIGINT stop the run at a batch boundary with a checkpoint (see the module doc)."""
    global _stop, _stops, _training, _active
    if not enabled:
        yield
        return
    _stop, _stops, _training, _active = None, 0, False, True
    previous = {sig: signal.signal(sig, _on_stop) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        stopping = _stop is not None
        for sig, handler in previous.items():
            # Once stopping with a saved checkpoint, a late repeat of the same request (Ctrl-C reaches
            # a sweep's tasks from the terminal and again from `sweep run`) must not kill the exit.
            signal.signal(sig, signal.SIG_IGN if stopping else handler)
        _stop, _stops, _training, _active = None, 0, False, False


def stop_enabled(world_size: int) -> bool:
    """Whether vitbench, not Lightning, handles SIGTERM/SIGINT for this run."""
    if world_size > 1:
        return False
    from lightning.fabric.plugins.environments import SLURMEnvironment

    return batch_requeue() or not SLURMEnvironment.detect()  # else Lightning's SLURM requeue owns SIGTERM


def _save_hpc_checkpoint(trainer) -> Path:
    out = Path(trainer.default_root_dir)
    numbers = [int(m.group(1)) for p in out.glob("hpc_ckpt_*.ckpt")
               if (m := re.fullmatch(r"hpc_ckpt_(\d+)\.ckpt", p.name))]
    path = out / f"hpc_ckpt_{max(numbers, default=0) + 1}.ckpt"
    trainer.save_checkpoint(path)
    for callback in trainer.callbacks:  # e.g. metrics.jsonl's rows wait for a checkpoint that holds them
        saved = getattr(callback, "checkpoint_saved", None)
        if callable(saved):
            saved()
    for logger in trainer.loggers:  # W&B shows "preempted", not "crashed", until the run resumes
        mark = getattr(getattr(logger, "experiment", None), "mark_preempting", None)
        if callable(mark):
            mark()
    return path


def _validates_now(trainer) -> bool:
    """Whether this step ends with a validation: a stop waits for the next step (one restored
    from a checkpoint saved before it would skip that validation)."""
    try:
        return bool(trainer.fit_loop.epoch_loop._should_check_val_fx(trainer.fit_loop._data_fetcher))
    except (AttributeError, TypeError):  # another Lightning: stop now, at worst one validation is skipped
        return False


def _save_and_exit_callback():
    import lightning as L  # here, so that run-task can install the handler before this slow import

    class SaveAndExitOnSignal(L.Callback):
        """After SIGUSR1 (batch requeue) or SIGTERM/SIGINT: save ``hpc_ckpt_<N+1>.ckpt`` at a batch boundary and exit."""

        def on_train_start(self, trainer, pl_module) -> None:
            global _training
            _training = True
            if _active:
                # Lightning's own SIGTERM handler (installed by fit) would end the run after the step
                # with a status of 0 and no checkpoint of its own; this one saves and says so.
                signal.signal(signal.SIGTERM, _on_stop)

        def on_train_end(self, trainer, pl_module) -> None:
            global _training
            _training = False
            if _stop is not None:  # it came during the last step's validation: its checkpoint is last.ckpt
                print(f"vitbench: interrupted by {_signal_name(_stop)} after the last training step: "
                      "rerun the same command to test the run", file=sys.stderr, flush=True)
                raise SystemExit(128 + _stop)

        def on_exception(self, trainer, pl_module, exception) -> None:
            global _training
            _training = False

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            global _training
            if _stop is not None and not _validates_now(trainer):
                _training = False  # a signal during the save below stops at once
                path = _save_hpc_checkpoint(trainer)
                print(f"vitbench: interrupted by {_signal_name(_stop)}: saved {path} at step {trainer.global_step}; "
                      "rerun the same command to resume from it", file=sys.stderr, flush=True)
                raise SystemExit(128 + _stop)
            if _signalled and batch_requeue():
                path = _save_hpc_checkpoint(trainer)
                print(f"SIGUSR1: saved {path} at step {trainer.global_step}; the requeued job resumes from it", flush=True)
                raise SystemExit(REQUEUE_EXIT)

    return SaveAndExitOnSignal()


def trainer_kwargs(callbacks: list, stop: bool = False) -> dict:
    """The Trainer's ``callbacks`` (and ``plugins``): the save-and-exit callback when a signal may stop the
    run (``stop``: SIGTERM/SIGINT, see :func:`stop_on_signal`), and Lightning's requeue off when the batch
    script owns it."""
    extra = [_save_and_exit_callback()] if stop or batch_requeue() else []
    if not batch_requeue():
        return {"callbacks": [*callbacks, *extra]}
    from lightning.fabric.plugins.environments import SLURMEnvironment

    install_handler()
    plugins = [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []
    return {"callbacks": [*callbacks, *extra], "plugins": plugins}
