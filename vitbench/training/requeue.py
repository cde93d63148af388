"""SLURM preemption for runs that share a job (``resources.runs_per_device`` > 1).

Lightning's own SLURM requeue (on SIGUSR1 each run saves ``hpc_ckpt_N.ckpt``,
then runs ``scontrol requeue``) requeues the whole job: in a job holding
several runs, the first to requeue would kill the others, maybe before they
saved. So when the batch script owns the requeue (``VITBENCH_REQUEUE=batch``,
set by the packed sbatch script), Lightning's is switched off and a run
instead saves its checkpoint at the next training-batch end after SIGUSR1 and
exits with :data:`REQUEUE_EXIT`; the script waits for every run, then requeues
the job once. The requeued job resumes each run from its newest
``hpc_ckpt_N.ckpt`` (``vitbench.training.run``).
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

ENV = "VITBENCH_REQUEUE"
REQUEUE_EXIT = 75  # EX_TEMPFAIL: saved, to be continued by the requeued job

_signalled = False


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


def _save_and_exit_callback():
    import lightning as L  # here, so that run-task can install the handler before this slow import

    class SaveAndExitOnSignal(L.Callback):
        """After SIGUSR1: save ``hpc_ckpt_<N+1>.ckpt`` at a batch boundary and exit with REQUEUE_EXIT."""

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if not _signalled:
                return
            out = Path(trainer.default_root_dir)
            numbers = [int(m.group(1)) for p in out.glob("hpc_ckpt_*.ckpt")
                       if (m := re.fullmatch(r"hpc_ckpt_(\d+)\.ckpt", p.name))]
            path = out / f"hpc_ckpt_{max(numbers, default=0) + 1}.ckpt"
            trainer.save_checkpoint(path)
            for logger in trainer.loggers:  # W&B shows "preempted", not "crashed", until the run resumes
                mark = getattr(getattr(logger, "experiment", None), "mark_preempting", None)
                if callable(mark):
                    mark()
            print(f"SIGUSR1: saved {path} at step {trainer.global_step}; the requeued job resumes from it", flush=True)
            raise SystemExit(REQUEUE_EXIT)

    return SaveAndExitOnSignal()


def trainer_kwargs(callbacks: list) -> dict:
    """The Trainer's ``callbacks`` (and ``plugins``): unchanged unless the batch script owns the requeue."""
    if not batch_requeue():
        return {"callbacks": callbacks}
    from lightning.fabric.plugins.environments import SLURMEnvironment

    install_handler()
    plugins = [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []
    return {"callbacks": [*callbacks, _save_and_exit_callback()], "plugins": plugins}
