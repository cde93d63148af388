"""The sweep directory: what was planned (sweep.json), submitted (jobs.json), and where each task stands.

::

    SWEEP_DIR/experiment.yaml   the experiment file, copied
    SWEEP_DIR/sweep.json        the tasks with their resolved configs (written atomically)
    SWEEP_DIR/jobs.json         how the sweep was run: local, or the SLURM submissions
    SWEEP_DIR/sweep.sbatch      the batch script (SLURM only)
    SWEEP_DIR/logs/             one log per task (local) or per array task (SLURM)
    SWEEP_DIR/runs/LABEL/<size>-s<seed>/   the run dirs (size: f0.1 or spc25, TrainSize.tag)
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

from vitbench import rundir
from vitbench.config import yaml_load
from vitbench.errors import VitbenchError
from vitbench.sweep.experiment import BackboneEntry, Experiment, Resources, parse_experiment
from vitbench.sweep.plan import Task, plan_tasks
from vitbench.training import convergence
from vitbench.utils import write_json, write_text

# What a sweep file planned before packing existed (no runs_per_device) means: the declared default.
_RUNS_PER_DEVICE = Resources().runs_per_device

SWEEP_JSON, JOBS_JSON, EXPERIMENT_YAML = "sweep.json", "jobs.json", "experiment.yaml"
# corrupt: the run has a results.json that does not read, so it is not done (vitbench report would refuse it).
STATES = ("done", "corrupt", "running", "pending", "failed", "not started", "unknown")


def default_sweep_dir(exp: Experiment) -> Path:
    return Path("sweeps") / exp.name


@dataclass(frozen=True)
class SweepPlan:
    """``sweep.json``: an experiment's tasks, planned into a sweep dir."""

    name: str
    sweep_dir: Path
    experiment: dict  # the experiment as planned, in plain JSON types
    tasks: tuple[Task, ...]

    def to_dict(self) -> dict:
        return {"name": self.name, "sweep_dir": str(self.sweep_dir), "experiment": self.experiment,
                "tasks": [t.to_dict() for t in self.tasks]}

    @property
    def runs_per_device(self) -> int:
        return self.experiment.get("resources", {}).get("runs_per_device", _RUNS_PER_DEVICE)

    def task(self, task_id: int) -> Task:
        if not 0 <= task_id < len(self.tasks):
            raise VitbenchError(f"sweep '{self.name}' has tasks 0..{len(self.tasks) - 1}, not {task_id}")
        return self.tasks[task_id]

    def task_at(self, group: str, index: int, slot: int = 0) -> Task | None:
        """The task an array job of ``group`` runs at array index ``index``, slot ``slot`` of its pack.

        None for an empty slot of an existing pack (the last pack, or a student
        pack whose main pack holds other labels too); an error if there is no such pack.
        """
        pack = [t for t in self.tasks if t.group == group and t.array_index == index]
        if not pack:
            raise VitbenchError(f"sweep '{self.name}' has no task in group '{group}' at array index {index}")
        return next((t for t in pack if t.slot == slot), None)


def plan_sweep(exp: Experiment, text: str, sweep_dir: str | Path | None, write: bool = True) -> SweepPlan:
    """Plan ``exp`` into ``sweep_dir``; a no-op if the same experiment is there already.

    Raises if the dir holds another experiment.
    """
    sweep_dir = Path(sweep_dir or default_sweep_dir(exp)).resolve()
    plan = SweepPlan(exp.name, sweep_dir, _plain(exp), tuple(plan_tasks(exp, sweep_dir)))
    existing = sweep_dir / SWEEP_JSON
    if existing.is_file():
        old = load_sweep(sweep_dir)
        if _meaning(old) != _meaning(plan):
            raise VitbenchError(
                f"{sweep_dir} already holds another version of sweep '{old.name}': "
                "pass another --sweep-dir, or rename the experiment (`name`) to start a new sweep"
            )
        return old
    if sweep_dir.exists() and any(sweep_dir.iterdir()):
        raise VitbenchError(f"{sweep_dir} exists and is not a sweep dir (no {SWEEP_JSON}): pass another --sweep-dir")
    if write:
        (sweep_dir / "logs").mkdir(parents=True, exist_ok=True)
        write_text(sweep_dir / EXPERIMENT_YAML, text)
        write_json(existing, plan.to_dict())
    return plan


def _meaning(plan: SweepPlan) -> tuple:
    """What a plan asks for, with today's defaults filled in: a sweep planned by an older vitbench
    (whose sweep.json lacks keys added since) is the same sweep, not "another version".

    Only the schema fills the defaults: nothing named in a sweep.json (a plugin) is imported here.
    """
    from vitbench.config import TrainConfig, from_dict

    try:
        exp = from_dict(Experiment, copy.deepcopy(plan.experiment))
        exp.backbones = [from_dict(BackboneEntry, dict(e)) if isinstance(e, dict) else e for e in exp.backbones]
        configs = [from_dict(TrainConfig, copy.deepcopy(t.config)).to_dict() for t in plan.tasks]
    except VitbenchError:  # keys this vitbench no longer knows: not the same sweep
        return (plan.experiment, plan.tasks)
    return (_plain(exp), [dataclasses.replace(t, config={}) for t in plan.tasks], configs)


def _plain(exp: Experiment) -> dict:
    d = exp.to_dict()
    return yaml.safe_load(yaml.safe_dump(d))  # plain JSON-able types, same as after a round trip


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


def load_sweep(sweep_dir: str | Path) -> SweepPlan:
    """The plan in ``sweep_dir/sweep.json``, checked: a truncated or hand-edited file is a one-line error.

    Every task must be as the planner wrote it: ids 0..N-1 in order, a teacher that is an earlier
    task, its own run dir inside the sweep dir (``run-task`` trains into it, ``status`` and
    ``vitbench report`` read it), and a config that ``run-task`` will accept.
    """
    sweep_dir = Path(sweep_dir).resolve()
    path = sweep_dir / SWEEP_JSON
    if not path.is_file():
        raise VitbenchError(f"{sweep_dir} is not a sweep dir (no {SWEEP_JSON}): "
                            "pass the dir `vitbench sweep run/submit` created, e.g. sweeps/NAME")
    fix = _replan_fix(sweep_dir)
    data = _read_json_file(path, fix)

    def bad(what: str):
        return VitbenchError(f"{path} is not a sweep file vitbench wrote ({what}): {fix}")

    if not isinstance(data, dict) or not isinstance(data.get("tasks"), list) or not isinstance(data.get("name"), str):
        raise bad("it needs a 'name' and a 'tasks' list")
    experiment = data.get("experiment", {})
    resources = experiment.get("resources", {}) if isinstance(experiment, dict) else None
    runs_per_device = resources.get("runs_per_device", _RUNS_PER_DEVICE) if isinstance(resources, dict) else None
    if not isinstance(runs_per_device, int) or isinstance(runs_per_device, bool) or runs_per_device < 1:
        raise bad("'experiment.resources' is not what the planner writes")
    root = str(sweep_dir) + os.sep
    tasks: list[Task] = []
    seen_dirs: dict[str, int] = {}
    checked = _ConfigChecks()
    for i, t in enumerate(data["tasks"]):
        if not isinstance(t, dict):
            raise bad(f"task {i} is a {type(t).__name__}, not an object")
        tid = t.get("id")
        if tid != i or isinstance(tid, bool):
            earlier = any(isinstance(u, dict) and u.get("id") == tid for u in data["tasks"][:i])
            raise bad(f"duplicate task id {tid}" if earlier else f"task {i} has id {json.dumps(tid)}, not {i}")
        try:
            task = Task.from_dict(t)
        except ValueError as e:
            raise bad(f"task {i}: {e}") from None
        if task.teacher is not None and not task.teacher < i:
            raise bad(f"task {i}: teacher {task.teacher} is not an earlier task's id")
        run_dir = os.path.normpath(task.run_dir)
        if not run_dir.startswith(root):
            raise VitbenchError(f"{path}: task {i}'s run dir {t['run_dir']} is outside the sweep dir {sweep_dir}: "
                                f"a sweep trains and reads only inside its own dir; {fix}")
        if run_dir in seen_dirs:
            raise bad(f"tasks {seen_dirs[run_dir]} and {i} share the run dir {t['run_dir']}")
        seen_dirs[run_dir] = i
        try:
            checked.check(task)
        except VitbenchError as e:
            raise bad(f"task {i}'s config: {e}") from None
        tasks.append(task)
    return SweepPlan(data["name"], sweep_dir, experiment, tuple(tasks))


class _ConfigChecks:
    """Checks each task's config as ``run-task`` will build it, before any task of the sweep runs.

    A key misspelt or a value broken by hand would otherwise surface only when that task starts,
    hours into a sweep. Only the schema is checked: a plugin named in the config is not imported,
    and the dataset need not exist on this machine (status runs on a login node too).
    """

    RECENT = 16  # distinct sections remembered per top-level key; tasks in a row mostly share them

    def __init__(self) -> None:
        self.seen: dict[str, list] = {}

    def check(self, task: Task) -> None:
        from vitbench.config import build_config

        # A section equal to one checked already is not checked again: 1,000 tasks share a handful
        # of data, model and optim sections, and ``sweep status`` must stay fast at that size.
        config = task.config
        new = {k: v for k, v in config.items()
               if not (isinstance(v, dict) and any(v == old for old in self.seen.get(k, ())))}
        build_config(new, check_paths=False)
        for k, v in new.items():
            if isinstance(v, dict):
                recent = self.seen.setdefault(k, [])
                recent.insert(0, v)
                del recent[self.RECENT:]
        # The config trains what the task says it is (what status and the report show).
        # A key a sweep.json from an older vitbench lacks is not compared.
        size = task.size
        for key, want in (("label", task.label), ("seed", task.seed), ("model.backbone", task.backbone),
                          ("model.preset", task.preset), ("data.samples_per_class", size.samples_per_class),
                          ("data.fraction", size.fraction or 1.0)):
            section, _, name = key.rpartition(".")
            holder = config.get(section, {}) if section else config
            if isinstance(holder, dict) and name in holder and holder[name] != want:
                raise VitbenchError(f"{key} is {json.dumps(holder[name])}, but the task's is {json.dumps(want)}")


def load_sweep_experiment(sweep_dir: Path) -> Experiment:
    path = sweep_dir / EXPERIMENT_YAML
    try:
        data = yaml_load(path.read_text()) or {}  # as `sweep plan` read it: no base-60, 1e-3 a number
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise VitbenchError(f"cannot read {path} ({type(e).__name__}): "
                            "restore the experiment file the sweep was planned from") from None
    if not isinstance(data, dict):
        raise VitbenchError(f"{path} is not an experiment (a {type(data).__name__}): "
                            "restore the experiment file the sweep was planned from")
    return parse_experiment(data, str(path))


def log_name(task: Task) -> str:
    return task.name.replace("/", "-")


# ----------------------------------------------------------------- jobs.json

def load_jobs(sweep_dir: Path) -> dict:
    path = sweep_dir / JOBS_JSON
    if not path.is_file():
        return {"mode": None, "submissions": []}
    fix = "restore it, or delete it if no job of this sweep is queued or running (status then goes by the run dirs)"
    jobs = _read_json_file(path, fix)
    subs = jobs.get("submissions", []) if isinstance(jobs, dict) else None
    if (not isinstance(subs, list) or jobs.get("mode") not in (None, "local", "slurm")
            or not all(isinstance(s, dict) and isinstance(s.get("job"), (str, int))
                       and isinstance(s.get("tasks", []), list) and isinstance(s.get("indices", []), list)
                       for s in subs)):
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

def pid_path(sweep_dir: Path, task: Task) -> Path:
    # Next to the task's log, not in the run dir: train() wants a run dir it created itself.
    return sweep_dir / "logs" / f"{log_name(task)}.pid"


def write_pid(sweep_dir: Path, task: Task) -> None:
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


@dataclass(frozen=True)
class TaskState:
    """Where a task stands (one of :data:`STATES`), the job that last ran it, and for a done task its convergence."""

    task: Task
    state: str
    job: Optional[str] = None  # "<job>_<array index>" on SLURM, "local-<pid>" locally
    converged: Optional[bool] = None  # None unless done

    def to_dict(self) -> dict:
        """The row `vitbench sweep status --json` prints."""
        t = self.task
        return {"task": t.id, "label": t.label, **t.size.to_dict(), "seed": t.seed, "state": self.state,
                "converged": self.converged, "run_dir": str(t.run_dir), "job": self.job}


_QUEUED = ("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED")


def task_states(plan: SweepPlan) -> list[TaskState]:
    """Each task's state: done / corrupt / running / pending / failed / not started / unknown, and its last job.

    ``unknown``: submitted to SLURM, not done, and squeue did not answer, so it may still be queued.
    """
    sweep_dir = plan.sweep_dir
    jobs = load_jobs(sweep_dir)
    slurm = jobs.get("mode") == "slurm"
    last_job: dict[int, str] = {}
    for sub in jobs.get("submissions", []):
        for tid, idx in zip(sub.get("tasks", []), sub.get("indices", [])):
            last_job[tid] = f"{sub['job']}_{idx}" if slurm else str(sub["job"])
    queue = squeue_states({s["job"] for s in jobs.get("submissions", [])}) if slurm else None
    rows = []
    for t in plan.tasks:
        run = t.run_dir
        job = last_job.get(t.id)
        results, converged = None, None
        if rundir.results_path(run).is_file():
            try:
                results = rundir.read_results(run, rundir.DONE_KEYS)
            except VitbenchError:
                results = False
        if results:
            state = "done"
            converged = convergence.converged(run, results)
        elif results is False:
            state = "corrupt"
        elif slurm and queue is not None and job in queue:
            state = "pending" if queue[job] in _QUEUED else "running"
        elif slurm and queue is None and job is not None:
            state = "unknown"
        elif _pid_alive(pid_path(sweep_dir, t)):
            state = "running"
        elif ((slurm and job is not None) or (sweep_dir / "logs" / f"{log_name(t)}.log").is_file()
              or rundir.config_path(run).is_file()):
            state = "failed"
        else:
            state = "not started"
        rows.append(TaskState(t, state, job, converged))
    return rows
