"""The sweep directory: what was planned (sweep.json), submitted (jobs.json), and where each task stands.

::

    SWEEP_DIR/experiment.yaml   the experiment file, copied
    SWEEP_DIR/sweep.json        the tasks with their resolved configs (written atomically)
    SWEEP_DIR/jobs.json         how the sweep was run: local, or the SLURM submissions
    SWEEP_DIR/sweep.sbatch      the batch script (SLURM only)
    SWEEP_DIR/logs/             one log per task (local) or per array task (SLURM)
    SWEEP_DIR/runs/LABEL/f<fraction>-s<seed>/   the run dirs
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import yaml

from vitbench.errors import VitbenchError
from vitbench.sweep.experiment import Experiment, parse_experiment, plan_tasks
from vitbench.utils import read_json, write_json, write_text

SWEEP_JSON, JOBS_JSON, EXPERIMENT_YAML = "sweep.json", "jobs.json", "experiment.yaml"
STATES = ("done", "running", "pending", "failed", "not started", "unknown")


def default_sweep_dir(exp: Experiment) -> Path:
    return Path("sweeps") / exp.name


def plan_sweep(exp: Experiment, text: str, sweep_dir: str | Path | None, write: bool = True) -> tuple[Path, dict]:
    """Plan ``exp`` into ``sweep_dir``; a no-op if the same experiment is there already.

    Returns (sweep dir, sweep.json contents). Raises if the dir holds another experiment.
    """
    sweep_dir = Path(sweep_dir or default_sweep_dir(exp)).resolve()
    tasks = plan_tasks(exp, sweep_dir)
    sweep = {"name": exp.name, "sweep_dir": str(sweep_dir), "experiment": _plain(exp), "tasks": tasks}
    existing = sweep_dir / SWEEP_JSON
    if existing.is_file():
        old = read_json(existing)
        if old.get("experiment") != sweep["experiment"] or old.get("tasks") != tasks:
            raise VitbenchError(
                f"{sweep_dir} already holds another version of sweep '{old.get('name')}': "
                "pass another --sweep-dir, or rename the experiment (`name`) to start a new sweep"
            )
        return sweep_dir, old
    if sweep_dir.exists() and any(sweep_dir.iterdir()):
        raise VitbenchError(f"{sweep_dir} exists and is not a sweep dir (no {SWEEP_JSON}): pass another --sweep-dir")
    if write:
        (sweep_dir / "logs").mkdir(parents=True, exist_ok=True)
        write_text(sweep_dir / EXPERIMENT_YAML, text)
        write_json(existing, sweep)
    return sweep_dir, sweep


def _plain(exp: Experiment) -> dict:
    d = exp.to_dict()
    return yaml.safe_load(yaml.safe_dump(d))  # plain JSON-able types, same as after a round trip


def load_sweep(sweep_dir: str | Path) -> tuple[Path, dict]:
    sweep_dir = Path(sweep_dir).resolve()
    path = sweep_dir / SWEEP_JSON
    if not path.is_file():
        raise VitbenchError(f"{sweep_dir} is not a sweep dir (no {SWEEP_JSON}): pass the dir `vitbench sweep run/submit` created, e.g. sweeps/NAME")
    return sweep_dir, read_json(path)


def load_sweep_experiment(sweep_dir: Path) -> Experiment:
    return parse_experiment(yaml.safe_load((sweep_dir / EXPERIMENT_YAML).read_text()) or {}, str(sweep_dir / EXPERIMENT_YAML))


def find_task(sweep: dict, task_id: int) -> dict:
    tasks = sweep["tasks"]
    if not 0 <= task_id < len(tasks):
        raise VitbenchError(f"sweep '{sweep['name']}' has tasks 0..{len(tasks) - 1}, not {task_id}")
    return tasks[task_id]


def task_for_index(sweep: dict, group: str, index: int, slot: int = 0) -> dict | None:
    """The task an array job of ``group`` runs at array index ``index``, slot ``slot`` of its pack.

    None for an empty slot of an existing pack (the last pack, or a student
    pack whose main pack holds other labels too); an error if there is no such pack.
    """
    pack = [t for t in sweep["tasks"] if t["group"] == group and t["array_index"] == index]
    if not pack:
        raise VitbenchError(f"sweep '{sweep['name']}' has no task in group '{group}' at array index {index}")
    return next((t for t in pack if t.get("slot", 0) == slot), None)


def log_name(task: dict) -> str:
    return task["name"].replace("/", "-")


# ----------------------------------------------------------------- jobs.json

def load_jobs(sweep_dir: Path) -> dict:
    path = sweep_dir / JOBS_JSON
    return read_json(path) if path.is_file() else {"mode": None, "submissions": []}


def record_submission(sweep_dir: Path, mode: str, job: str, group: str, indices: list[int],
                      tasks: list[int], **extra) -> None:
    jobs = load_jobs(sweep_dir)
    jobs["mode"] = mode
    jobs.setdefault("submissions", []).append(
        {"job": job, "group": group, "indices": indices, "tasks": tasks, "time": time.time(), **extra})
    write_json(sweep_dir / JOBS_JSON, jobs)


# ------------------------------------------------------------- pid files (local)

def pid_path(sweep_dir: Path, task: dict) -> Path:
    # Next to the task's log, not in the run dir: train() wants a run dir it created itself.
    return sweep_dir / "logs" / f"{log_name(task)}.pid"


def write_pid(sweep_dir: Path, task: dict) -> None:
    write_text(pid_path(sweep_dir, task), f"{os.getpid()} {socket.gethostname()}\n")


def _pid_alive(path: Path) -> bool:
    try:
        pid, host = path.read_text().split()[:2]
    except (OSError, ValueError):
        return False
    if host != socket.gethostname():
        return False
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True
    try:  # a recycled pid belongs to some other program
        return b"vitbench" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True


# -------------------------------------------------------------------- status

def squeue_states(job_ids: set[str]) -> dict[str, str] | None:
    """``{"<job>_<index>": STATE}`` for this sweep's array tasks in squeue; None without squeue."""
    if not job_ids or shutil.which("squeue") is None:
        return None
    try:
        proc = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T %A %K"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    states = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        jid = parts[0]
        base = jid.split("_")[0]
        if base in job_ids:
            states[jid] = parts[1]
    return states


def task_states(sweep_dir: Path, sweep: dict) -> list[dict]:
    """Each task's state: done / running / pending / failed / not started, and its last job.

    ``unknown``: submitted to SLURM, not done, and squeue did not answer, so it may still be queued.
    """
    jobs = load_jobs(sweep_dir)
    last_job: dict[int, str] = {}
    for sub in jobs.get("submissions", []):
        for tid, idx in zip(sub.get("tasks", []), sub.get("indices", [])):
            last_job[tid] = f"{sub['job']}_{idx}" if jobs.get("mode") == "slurm" else str(sub["job"])
    queue = squeue_states({s["job"] for s in jobs.get("submissions", [])}) if jobs.get("mode") == "slurm" else None
    rows = []
    for t in sweep["tasks"]:
        run = Path(t["run_dir"])
        job = last_job.get(t["id"])
        if (run / "results.json").is_file():
            state = "done"
        elif jobs.get("mode") == "slurm" and queue is not None and job in queue:
            q = queue[job]
            state = "pending" if q in ("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED") else "running"
        elif jobs.get("mode") == "slurm" and queue is None and job is not None:
            state = "unknown"
        elif _pid_alive(pid_path(sweep_dir, t)):
            state = "running"
        elif (jobs.get("mode") == "slurm" and job is not None) or (sweep_dir / "logs" / f"{log_name(t)}.log").is_file() or (run / "config.yaml").is_file():
            state = "failed"
        else:
            state = "not started"
        rows.append({"task": t["id"], "name": t["name"], "label": t["label"], "fraction": t["fraction"],
                     "samples_per_class": t["samples_per_class"], "seed": t["seed"], "state": state,
                     "run_dir": t["run_dir"], "job": job})
    return rows
