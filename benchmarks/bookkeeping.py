"""Does sweep bookkeeping stay fast at 1,000+ tasks?

Builds an experiment of 1,020 tasks (6 labels including a distilled one, 10 fractions,
17 seeds) in a temp dir, and times, in seconds:

* ``plan_fn``: ``load_experiment`` + ``plan_sweep`` in this process (fresh sweep dir);
* ``plan_cli``: ``vitbench sweep plan`` as a new process (fresh sweep dir), what a user waits for;
* ``status_fn`` / ``status_cli``: ``task_states`` / ``vitbench sweep status``;
* ``report_fn`` / ``report_cli``: ``write_report`` / ``vitbench report``;

status and report on a sweep dir run "locally" (a jobs.json) where 1,000 of the tasks have a
``results.json`` (fake accuracies and validation histories, the real schema, written with the writer ``train()``
uses). No data, no model, no training. Prints one JSON line: the seconds, and whether each is under the 2 s target.

Each step is also given in CPU seconds (this process's, or the CLI process's, user + system): all of the
work is single-threaded, so on an idle machine the two agree, and on a busy one (other processes on the
same cores) the CPU seconds still say what the step costs while the wall seconds say what it took.

    .venv/bin/python benchmarks/bookkeeping.py [--tasks-done 1000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

TARGET_S = 2.0
FRACTIONS = [0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0]
SEEDS = list(range(17))
FAMILY = {"resnet": "cnn", "vit": "vit", "deit": "vit", "swin": "hierarchical", "pit": "pooling"}


def experiment() -> dict:
    return {
        "name": "bookkeeping",
        "dataset": "fashion_mnist",
        "fractions": FRACTIONS,
        "seeds": SEEDS,
        "budget": {"max_steps": 20000},
        "backbones": [
            {"name": "resnet", "preset": "tiny"},
            {"name": "vit", "preset": "tiny"},
            {"name": "swin", "preset": "tiny"},
            {"name": "pit", "preset": "tiny"},
            {"name": "deit", "preset": "tiny"},
            {"name": "deit", "preset": "tiny", "label": "deit_distilled", "teacher": "resnet", "distillation": "hard"},
        ],
        "train": {"model": {"image_size": 32}, "data": {"batch_size": 128}, "trainer": {"precision": "bf16-mixed"}},
        "resources": {"nodes": 1, "devices": 1, "accelerator": "gpu", "time": "04:00:00"},
        "wandb": {"project": "vitbench-bookkeeping", "mode": "disabled"},
        "local": {"parallel": 1},
    }


def fake_results(task, i: int) -> dict:
    """A results.json with every field train() writes for ``task`` (a planned Task); the accuracies are made up.

    With a validation history, so that status and report recompute each run's convergence verdict from it,
    as they do for a real run."""
    from vitbench.training import convergence

    fraction = task.size.fraction
    n_train = round(54000 * fraction)
    acc = 0.6 + 0.3 * fraction ** 0.3 + 0.002 * (i % 7)
    steps = 20000
    # 8 validations: a third of the runs still rising at the end (not converged), the rest level from the 6th.
    flat_from = 8 if i % 3 == 0 else 6
    history = [[steps * k // 8, round(acc + 0.01 - 0.004 * max(0, flat_from - k), 6)] for k in range(1, 9)]
    return {
        "label": task.label, "backbone": task.backbone, "family": FAMILY[task.backbone],
        "preset": task.preset, "dataset": "fashion_mnist", "fraction": fraction,
        "samples_per_class": None, "n_train": n_train, "n_val": 6000, "n_test": 10000, "seed": task.seed,
        "sweep": "bookkeeping", "image_size": 32, "in_chans": 1, "num_classes": 10,
        "class_names": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                        "Ankle boot"],
        "params": 5_000_000, "gflops": 0.3,
        "teacher": task.config["distill"]["teacher"], "distillation": task.distillation,
        "vitbench_version": "bench", "hostname": "bench", "software": "bench", "device": "cpu: bench",
        "epochs": 40, "steps": steps, **convergence.verdict(history, steps), "val_history": history,
        "test_acc": acc, "test_acc5": 0.99, "best_val_acc": acc + 0.01,
        "images_per_s": 5000.0, "wall_time_s": 600.0, "world_size": 1, "wandb_run_id": task.wandb_id,
    }


def _cpu() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process and the children it waited for) of ``fn()``."""
    t0, c0 = time.perf_counter(), _cpu()
    fn()
    return time.perf_counter() - t0, _cpu() - c0


def cli(*args) -> None:
    env = {**os.environ, "WANDB_MODE": "disabled"}
    proc = subprocess.run([sys.executable, "-m", "vitbench", *map(str, args)], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"vitbench {' '.join(map(str, args))} failed:\n{proc.stderr[-2000:]}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks-done", type=int, default=1000, help="tasks given a results.json")
    p.add_argument("--keep", metavar="DIR", help="build everything in DIR (kept) instead of a temp dir")
    a = p.parse_args()

    from vitbench.report import write_report
    from vitbench.sweep.experiment import load_experiment
    from vitbench.sweep.sweepdir import plan_sweep, record_submission, task_states
    from vitbench.utils import write_json

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(a.keep or tmp)
        root.mkdir(parents=True, exist_ok=True)
        exp_path = root / "bookkeeping.yaml"
        exp_path.write_text("# benchmark experiment\n" + yaml.safe_dump(experiment(), sort_keys=False))

        load = os.getloadavg()[0]
        secs: dict[str, tuple[float, float]] = {}
        plans = []

        def plan_fn():
            exp, text = load_experiment(exp_path)
            plans.append(plan_sweep(exp, text, root / "sweep"))

        secs["plan_fn"] = timed(plan_fn)
        secs["plan_cli"] = timed(lambda: cli("sweep", "plan", exp_path, "--sweep-dir", root / "sweep-cli"))
        plan = plans[0]
        tasks, sweep_dir = plan.tasks, plan.sweep_dir
        ids = [t.id for t in tasks]
        # as `sweep run` does: status then checks pid files
        record_submission(sweep_dir, "local", "local-1", "local", ids, ids)
        for i, t in enumerate(tasks[: a.tasks_done]):
            write_json(t.run_dir / "results.json", fake_results(t, i))
        secs["status_fn"] = timed(lambda: task_states(plan))
        secs["status_cli"] = timed(lambda: cli("sweep", "status", sweep_dir))
        secs["report_fn"] = timed(lambda: write_report(sweep_dir, echo=None))
        secs["report_cli"] = timed(lambda: cli("report", sweep_dir))

    print(json.dumps({
        "benchmark": "bookkeeping", "command": "python " + " ".join(sys.argv), "date": time.strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()} CPUs", "load_average_1min": round(load, 2),
        "tasks": len(tasks), "done": min(a.tasks_done, len(tasks)),
        "seconds": {k: round(v[0], 3) for k, v in secs.items()},
        "cpu_seconds": {k: round(v[1], 3) for k, v in secs.items()},
        "under_2s": {k: v[0] < TARGET_S for k, v in secs.items()},
    }))


if __name__ == "__main__":
    main()
