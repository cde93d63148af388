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

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import yaml

from vitbench import rundir
from vitbench.errors import VitbenchError
from vitbench.sweep.experiment import Experiment, parse_experiment, plan_tasks
from vitbench.utils import write_json, write_text

SWEEP_JSON, JOBS_JSON, EXPERIMENT_YAML = "sweep.json", "jobs.json", "experiment.yaml"
# corrupt: the run has a results.json that does not read, so it is not done (vitbench report would refuse it).
STATES = ("done", "corrupt", "running", "pending", "failed", "not started", "unknown")


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
        old = read_sweep_json(sweep_dir)
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
    return sweep_dir, read_sweep_json(sweep_dir)


def _read_json_file(path: Path, fix: str):
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise VitbenchError(f"{path} is corrupt (line {e.lineno}: {e.msg}): {fix}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise VitbenchError(f"cannot read {path} ({getattr(e, 'strerror', None) or type(e).__name__}): {fix}") from None


def _replan_fix(sweep_dir: Path) -> str:
    return (f"restore it, or plan the sweep again into a new dir (`vitbench sweep plan EXP --sweep-dir NEW`; "
            f"the experiment file is {sweep_dir / EXPERIMENT_YAML})")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def read_sweep_json(sweep_dir: Path) -> dict:
    """``sweep.json``, checked: a truncated or hand-edited file is a one-line error, never a traceback.

    Every task must be as the planner wrote it: ids 0..N-1 in order, a teacher that is an earlier
    task, and its own run dir inside the sweep dir (``run-task`` trains into it and ``status`` reads it).
    """
    path = sweep_dir / SWEEP_JSON
    fix = _replan_fix(sweep_dir)
    sweep = _read_json_file(path, fix)

    def bad(what: str):
        return VitbenchError(f"{path} is not a sweep file vitbench wrote ({what}): {fix}")

    if not isinstance(sweep, dict) or not isinstance(sweep.get("tasks"), list) or not isinstance(sweep.get("name"), str):
        raise bad("it needs a 'name' and a 'tasks' list")
    resources = sweep.get("experiment", {}).get("resources", {}) if isinstance(sweep.get("experiment", {}), dict) else None
    if not isinstance(resources, dict) or not _is_int(resources.get("runs_per_device", 1)) or resources.get("runs_per_device", 1) < 1:
        raise bad("'experiment.resources' is not what the planner writes")
    root = str(sweep_dir) + os.sep
    seen_dirs: dict[str, int] = {}
    for i, t in enumerate(sweep["tasks"]):
        if not isinstance(t, dict):
            raise bad(f"task {i} is a {type(t).__name__}, not an object")
        tid = t.get("id")
        if tid != i or not _is_int(tid):
            raise bad(f"duplicate task id {tid}" if any(u.get("id") == tid for u in sweep["tasks"][:i] if isinstance(u, dict))
                      else f"task {i} has id {json.dumps(tid)}, not {i}")
        for key, ok in (("name", str), ("label", str), ("backbone", str), ("preset", str), ("group", str), ("run_dir", str),
                        ("config", dict)):
            if not isinstance(t.get(key), ok):
                raise bad(f"task {i}: '{key}' is missing or not a {'string' if ok is str else 'mapping'}")
        for key in ("seed", "array_index", "slot"):
            value = t.get(key, 0 if key == "slot" else None)  # slot: absent in an unpacked plan
            if not _is_int(value) or value < 0:
                raise bad(f"task {i}: '{key}' is {json.dumps(t.get(key))}, not an integer >= 0")
        fraction, spc = t.get("fraction"), t.get("samples_per_class")
        if (fraction is None) == (spc is None):
            raise bad(f"task {i} needs one of 'fraction' and 'samples_per_class'")
        if not (spc is None and isinstance(fraction, (int, float)) and not isinstance(fraction, bool) and 0 < fraction <= 1
                or fraction is None and _is_int(spc) and spc >= 1):
            raise bad(f"task {i}: its size is fraction {json.dumps(fraction)}, samples_per_class {json.dumps(spc)}")
        teacher = t.get("teacher")
        if teacher is not None and (not _is_int(teacher) or not 0 <= teacher < i):
            raise bad(f"task {i}: teacher {json.dumps(teacher)} is not an earlier task's id")
        run_dir = os.path.normpath(t["run_dir"])
        if not os.path.isabs(run_dir):
            raise bad(f"task {i}'s run dir {t['run_dir']} is not an absolute path")
        if not run_dir.startswith(root):
            raise VitbenchError(f"{path}: task {i}'s run dir {t['run_dir']} is outside the sweep dir {sweep_dir}: "
                                f"a sweep trains and reads only inside its own dir; {fix}")
        if run_dir in seen_dirs:
            raise bad(f"tasks {seen_dirs[run_dir]} and {i} share the run dir {t['run_dir']}")
        seen_dirs[run_dir] = i
        if t["config"].get("out") != t["run_dir"]:
            raise bad(f"task {i}: config.out is not its run dir {t['run_dir']}")
    return sweep


def load_sweep_experiment(sweep_dir: Path) -> Experiment:
    path = sweep_dir / EXPERIMENT_YAML
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise VitbenchError(f"cannot read {path} ({type(e).__name__}): restore the experiment file the sweep was planned from") from None
    if not isinstance(data, dict):
        raise VitbenchError(f"{path} is not an experiment (a {type(data).__name__}): restore the experiment file the sweep was planned from")
    return parse_experiment(data, str(path))


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
    if not path.is_file():
        return {"mode": None, "submissions": []}
    fix = "restore it, or delete it if no job of this sweep is queued or running (status then goes by the run dirs)"
    jobs = _read_json_file(path, fix)
    subs = jobs.get("submissions", []) if isinstance(jobs, dict) else None
    if (not isinstance(subs, list) or jobs.get("mode") not in (None, "local", "slurm")
            or not all(isinstance(s, dict) and isinstance(s.get("job"), (str, int)) and isinstance(s.get("tasks", []), list)
                       and isinstance(s.get("indices", []), list) for s in subs)):
        raise VitbenchError(f"{path} is not a jobs file vitbench wrote: {fix}")
    return jobs


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

    ``converged``: for a done task, whether it passed the convergence check; else None.

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
        finished = rundir.results_ok(run)
        converged = None
        if finished:
            state = "done"
            converged = rundir.converged(run, rundir.read_results(run))
        elif finished is False:
            state = "corrupt"
        elif jobs.get("mode") == "slurm" and queue is not None and job in queue:
            q = queue[job]
            state = "pending" if q in ("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED") else "running"
        elif jobs.get("mode") == "slurm" and queue is None and job is not None:
            state = "unknown"
        elif _pid_alive(pid_path(sweep_dir, t)):
            state = "running"
        elif (jobs.get("mode") == "slurm" and job is not None) or (sweep_dir / "logs" / f"{log_name(t)}.log").is_file() or rundir.config_path(run).is_file():
            state = "failed"
        else:
            state = "not started"
        rows.append({"task": t["id"], "name": t["name"], "label": t["label"], "fraction": t["fraction"],
                     "samples_per_class": t["samples_per_class"], "seed": t["seed"], "state": state,
                     "run_dir": t["run_dir"], "job": job, "converged": converged})
    return rows
