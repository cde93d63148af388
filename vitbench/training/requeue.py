"""Stopping a run with a checkpoint: SLURM preemption of packed jobs, and SIGTERM/SIGINT.

Packed jobs (``resources.runs_per_device`` > 1).

Lightning's own SLURM requeue (on SIGUSR1 each run saves a numbered requeue checkpoint,
then runs ``scontrol requeue``) requeues the whole job: in a job holding
several runs, the first to requeue would kill the others, maybe before they
saved. So when the batch script owns the requeue (``VITBENCH_REQUEUE=batch``,
set by the packed sbatch script), Lightning's is switched off and a run
instead saves its checkpoint at the next training-batch end after SIGUSR1 (the one after, if
that step validates; after the last step it tests and finishes instead) and exits with
:data:`REQUEUE_EXIT`; the script waits for every run, then requeues
the job once. The requeued job resumes each run from its newest requeue
checkpoint (``vitbench.training.run``; the names are :mod:`vitbench.rundir`'s).

SIGTERM and SIGINT (``kill``, Ctrl-C, ``vitbench sweep run`` stopping its tasks) take the same
path: during training the run saves the next requeue checkpoint at the next batch boundary and exits
with ``128 + signal`` and a one-line message; rerunning the same command resumes from it. Outside
training (before the first step, during the test) there is nothing new to save, and the run exits
at once. In a DDP job (``--devices 2``) the signal may reach one rank only (``kill`` of the
``vitbench train`` process) or all (Ctrl-C): at every batch end the ranks agree on whether any was
signalled, so all stop at the same batch, one checkpoint is saved, and each process exits; a rank
that leaves at once (outside training) takes the others with it, none is left waiting for it.
Left to Lightning where Lightning owns them: under its SLURM auto-requeue, and with a launcher
that forks or spawns the ranks (``ddp_spawn``, ``ddp_notebook``), whose ranks this process cannot reach.
"""

from __future__ import annotations

import os
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
_agreed = False  # every rank stopped at the same batch (its other ranks exit by themselves)
CHILD_GRACE_S = 30.0  # how long the first rank waits for the others to exit after an agreed stop
_ranks: list = []  # the other ranks' processes, once claimed from Lightning's launcher


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
        if _rank() == 0:
            print(f"vitbench: interrupted by {_signal_name(signum)}: rerun the same command to resume "
                  "from the last checkpoint", file=sys.stderr, flush=True)
        raise SystemExit(128 + signum)


def _rank() -> int:
    from lightning.pytorch.utilities import rank_zero_only

    return getattr(rank_zero_only, "rank", 0)


@contextmanager
def stop_on_signal(enabled: bool = True, trainer=None):
    """While active, SIGTERM/SIGINT stop the run at a batch boundary with a checkpoint (see the module doc).

    ``trainer``: under DDP, the first rank's launcher holds the other ranks' processes; when this
    process leaves with an exception they are waited for (an agreed stop) or ended, never orphaned.
    """
    global _stop, _stops, _training, _active, _agreed
    if not enabled:
        yield
        return
    _stop, _stops, _training, _active, _agreed = None, 0, False, True, False
    previous = {sig: signal.signal(sig, _on_stop) for sig in STOP_SIGNALS}
    try:
        yield
    except BaseException:
        _end_other_ranks(trainer, CHILD_GRACE_S if _agreed else 0.0)
        raise
    finally:
        stopping = _stop is not None
        for sig, handler in previous.items():
            # Once stopping with a saved checkpoint, a late repeat of the same request (Ctrl-C reaches
            # a sweep's tasks from the terminal and again from `sweep run`) must not kill the exit.
            signal.signal(sig, signal.SIG_IGN if stopping else handler)
        _stop, _stops, _training, _active, _agreed = None, 0, False, False, False


def _claim_other_ranks(trainer) -> list:
    """The processes of the ranks this one launched, taken from Lightning's launcher.

    Its watcher thread SIGKILLs this process as soon as another rank exits non-zero: right when a
    stop is planned, and before this process could exit with its own status. Emptied, its list
    (the watcher's too) leaves the other ranks to :func:`_end_other_ranks`.
    """
    global _ranks
    launcher = getattr(getattr(trainer, "strategy", None), "launcher", None)
    procs = getattr(launcher, "procs", None)
    if isinstance(procs, list) and procs:
        _ranks += procs
        procs.clear()
    return _ranks


def _end_other_ranks(trainer, grace: float) -> None:
    """The ranks this process launched: given ``grace`` seconds to exit, then killed.

    A rank blocked in a collective its peer left will never return to Python: only SIGKILL ends it.
    """
    global _ranks
    for proc in _claim_other_ranks(trainer):
        try:
            proc.wait(timeout=grace)
        except Exception:  # noqa: BLE001 - TimeoutExpired, or a wait interrupted by a repeated signal
            pass
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    _ranks = []


def stop_enabled(world_size: int, strategy=None) -> bool:
    """Whether vitbench, not Lightning, handles SIGTERM/SIGINT for this run.

    ``strategy``: the Trainer's, once it exists; with several ranks, only a launcher that starts them
    as scripts (each runs ``vitbench train``, so each takes part in agreeing on the stop) will do.
    """
    if world_size > 1 and strategy is not None:
        from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

        launcher = getattr(strategy, "launcher", None)
        if launcher is not None and not isinstance(launcher, _SubprocessScriptLauncher):
            return False
    from lightning.fabric.plugins.environments import SLURMEnvironment

    return batch_requeue() or not SLURMEnvironment.detect()  # else Lightning's SLURM requeue owns SIGTERM


def _agree(trainer, stop: int, requeue: bool) -> tuple[int, bool]:
    """(signal, requeue) as every rank sees it: any rank's signal stops them all at this same batch."""
    if trainer.world_size <= 1:
        return stop, requeue
    import torch

    # One tiny collective per step; Lightning already makes one of its own (its SIGTERM broadcast).
    flags = torch.tensor([stop, int(requeue)], dtype=torch.int64, device=trainer.strategy.root_device)
    flags = trainer.strategy.reduce(flags, reduce_op="max")
    return int(flags[0]), bool(flags[1])


def _save_hpc_checkpoint(trainer) -> Path:
    from vitbench import rundir

    # Every rank takes part in the save (its barrier); the first names the file, so all report the same.
    path = trainer.strategy.broadcast(rundir.next_hpc_checkpoint(trainer.default_root_dir))
    trainer.save_checkpoint(path, weights_only=False)  # the whole state: a resume continues exactly
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
    """Whether this step ends with a validation: a stop or a requeue waits for the next step (one
    restored from a checkpoint saved before it would skip that validation)."""
    try:
        return bool(trainer.fit_loop.epoch_loop._should_check_val_fx(trainer.fit_loop._data_fetcher))
    except (AttributeError, TypeError):  # another Lightning: stop now, at worst one validation is skipped
        return False


def _save_and_exit_callback():
    import lightning as L  # here, so that run-task can install the handler before this slow import

    class SaveAndExitOnSignal(L.Callback):
        """After SIGUSR1 (batch requeue) or SIGTERM/SIGINT: save the next requeue checkpoint at a batch
        boundary and exit."""

        def on_train_start(self, trainer, pl_module) -> None:
            global _training
            _training = True
            if _active:
                # Lightning's own SIGTERM handler (installed by fit) would end the run after the step
                # with a status of 0 and no checkpoint of its own; this one saves and says so.
                signal.signal(signal.SIGTERM, _on_stop)

        def on_test_start(self, trainer, pl_module) -> None:
            if _active:  # as in training: Lightning's handler would first signal the other ranks itself
                signal.signal(signal.SIGTERM, _on_stop)

        def on_train_end(self, trainer, pl_module) -> None:
            global _training, _agreed
            _training = False
            stop = _stop
            if _active:
                stop, _ = _agree(trainer, _stop or 0, False)
            if stop:  # it came during the last step's validation: its checkpoint is last.ckpt
                _agreed = True
                _claim_other_ranks(trainer)
                if trainer.is_global_zero:
                    print(f"vitbench: interrupted by {_signal_name(stop)} after the last training step: "
                          "rerun the same command to test the run", file=sys.stderr, flush=True)
                raise SystemExit(128 + stop)

        def on_exception(self, trainer, pl_module, exception) -> None:
            global _training
            _training = False

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            global _agreed
            requeue = batch_requeue()
            if not (_active or requeue):
                return
            stop, requeue_now = _agree(trainer, _stop or 0, _signalled and requeue)
            if (stop or requeue_now) and _validates_now(trainer):
                return  # saved now, before this step's validation, the resumed run would never make it
            if stop:
                # Not `_training = False`: Ctrl-C on `sweep run` reaches a task twice (from the terminal
                # and forwarded), and on a busy machine the second can land during this save; it is the
                # same request, so the save finishes. A third signal still stops at once (_on_stop).
                _agreed = True
                _claim_other_ranks(trainer)  # before the save: until it is done no other rank can exit
                path = _save_hpc_checkpoint(trainer)
                if trainer.is_global_zero:
                    print(f"vitbench: interrupted by {_signal_name(stop)}: saved {path} at step {trainer.global_step}; "
                          "rerun the same command to resume from it", file=sys.stderr, flush=True)
                raise SystemExit(128 + stop)
            if requeue_now:
                _agreed = True
                _claim_other_ranks(trainer)
                path = _save_hpc_checkpoint(trainer)
                if trainer.is_global_zero:
                    print(f"SIGUSR1: saved {path} at step {trainer.global_step}; the requeued job resumes from it",
                          flush=True)
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
