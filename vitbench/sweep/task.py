"""``vitbench sweep run-task``: run one planned task (locally or inside a SLURM array job)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from vitbench.errors import VitbenchError
from vitbench.rundir import results_ok, results_path
from vitbench.sweep.sweepdir import load_sweep, write_pid


def run_task(sweep_dir: str | Path, task_id: int | None = None, group: str | None = None,
             array_index: int | None = None, slot: int = 0) -> dict | None:
    """Train task ``task_id`` (or the task at ``slot`` of pack ``array_index`` of ``group``).

    A task whose results.json exists is skipped (returns None): resubmitting or
    requeueing a finished task never trains it twice. So is an empty slot (the
    last pack of an array may hold fewer than ``runs_per_device`` tasks).
    """
    from vitbench.training.requeue import batch_requeue, install_handler

    if batch_requeue():  # before anything slow: a SIGUSR1 forwarded now must not kill the run
        install_handler()
    plan = load_sweep(sweep_dir)
    task = plan.task(task_id) if task_id is not None else plan.task_at(group, array_index, slot)
    rank = int(os.environ.get("SLURM_PROCID", os.environ.get("RANK", "0")))
    if task is None:
        print(f"{group} pack {array_index} slot {slot}: no task (a pack that is not full); nothing to do", flush=True)
        return None
    results = results_path(task.run_dir)
    state = results_ok(task.run_dir)
    if state is False:  # never "done": a requeue or resume would otherwise skip it for good
        raise VitbenchError(f"task {task.id} {task.name}: {results} is corrupt: delete it (and the run dir, to "
                            "start over), then `vitbench sweep resume`")
    if state:
        if rank == 0:
            print(f"task {task.id} {task.name}: already done ({results}); skipping", flush=True)
        return None
    from vitbench.config import build_config

    # Checked (the dataset too) before the pid file says the task is running.
    cfg = build_config(task.config)
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads and threads.isdigit():
        import torch

        torch.set_num_threads(max(1, int(threads)))
    if rank == 0:
        write_pid(plan.sweep_dir, task)
        where = f" (pack {task.array_index} slot {task.slot})" if array_index is not None else ""
        print(f"task {task.id} {task.name}{where}: start {time.strftime('%Y-%m-%d %H:%M:%S')} "
              f"on {os.uname().nodename} (run dir {task.run_dir})", flush=True)
    from vitbench.training import train

    return train(cfg)
