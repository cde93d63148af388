"""SLURM submission: a cluster profile, one sbatch script, a job array per task group, and their dependencies.

The undistilled tasks go in one array (``main``, array index = task id); each
distilled label gets its own array whose index is the teacher's task id, with
``--dependency=aftercorr:<main job>``, so a student starts as soon as *its*
teacher finished successfully (and is cancelled if the teacher fails, thanks
to ``--kill-on-invalid-dep=yes``).

With ``resources.runs_per_device`` K > 1 an array index is a pack of up to K
tasks (main pack *i*: tasks iK..iK+K-1; student pack *i*: the students of
main pack *i*), run at once as K job steps sharing the element's device.

A resubmission (``submit`` again, ``resume``) sends only the unfinished tasks: a student whose
teacher is still queued or running then depends on that teacher's job, one whose teacher is
done on nothing.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from vitbench.config import from_dict, load_yaml
from vitbench.errors import VitbenchError
from vitbench.sweep.experiment import Experiment, check_slurm_mem, check_slurm_time
from vitbench.sweep.plan import MAIN_GROUP, Task
from vitbench.sweep.sweepdir import SweepPlan, TaskState, record_submission

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Profile:
    name: str = ""
    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    gpus_per_node: int = 0
    gres: Optional[str] = None
    cpus_per_task: int = 1
    mem_per_cpu: Optional[str] = None
    time: Optional[str] = None
    max_concurrent: int = 8
    mps: bool = False  # packed GPU jobs start a CUDA MPS daemon, so their runs share the GPU concurrently
    setup: list = field(default_factory=list)
    sbatch_extra: list = field(default_factory=list)
    path: Optional[str] = None


def _profile_dirs() -> list[Path]:
    dirs = [Path.cwd() / "slurm", REPO_ROOT / "slurm"]
    out = []
    for d in dirs:
        if d.resolve() not in [o.resolve() for o in out]:
            out.append(d)
    return out


def available_profiles() -> list[str]:
    names = set()
    for d in _profile_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.yaml"))
    return sorted(names)


def load_profile(spec: str) -> Profile:
    """``spec`` is a name (``slurm/NAME.yaml`` in ./slurm, then the repo's slurm/) or a path."""
    path = None
    if spec.endswith((".yaml", ".yml")) or "/" in spec:
        path = Path(spec)
        if not path.is_file():
            raise VitbenchError(
                f"profile file {spec} not found: available profiles are {', '.join(available_profiles()) or 'none'}"
            )
    else:
        for d in _profile_dirs():
            if (d / f"{spec}.yaml").is_file():
                path = d / f"{spec}.yaml"
                break
        if path is None:
            raise VitbenchError(
                f"unknown profile '{spec}': available are {', '.join(available_profiles()) or 'none'} "
                "(slurm/NAME.yaml, or pass a path to a profile file)"
            )
    data = load_yaml(path)
    prof = from_dict(Profile, data, f"profile {path.name}")
    prof.path = str(path.resolve())
    prof.name = prof.name or path.stem
    if prof.max_concurrent < 1 or prof.cpus_per_task < 1:
        raise VitbenchError(f"profile {path}: max_concurrent and cpus_per_task must be >= 1")
    check_slurm_mem(prof.mem_per_cpu, f"profile {path.name}: mem_per_cpu")
    check_slurm_time(prof.time, f"profile {path.name}: time")
    for key in ("partition", "account", "qos", "gres"):
        value = getattr(prof, key)
        if value is not None and (not value or any(c.isspace() for c in value)):
            raise VitbenchError(f"profile {path.name}: {key} {value!r} must be one word (it becomes an #SBATCH option)")
    return prof


def check_resources(exp: Experiment, prof: Profile) -> None:
    r = exp.resources
    if r.accelerator == "gpu" and prof.gpus_per_node == 0:
        raise VitbenchError(
            f"experiment '{exp.name}' asks for GPUs (resources.accelerator: gpu) but profile '{prof.name}' has "
            "gpus_per_node: 0: use a GPU profile, or set resources.accelerator: cpu"
        )
    if r.accelerator == "gpu" and r.devices > prof.gpus_per_node:
        raise VitbenchError(
            f"resources.devices {r.devices} exceeds profile '{prof.name}' gpus_per_node {prof.gpus_per_node}: "
            "lower resources.devices or use more nodes (resources.nodes)"
        )


def python_command(prof: Profile) -> str:
    """The interpreter the job runs: this one, unless the profile's setup activates an env."""
    activates = any(("activate" in line or "conda" in line or "module load" in line and "python" in line)
                    for line in prof.setup)
    return "python" if activates else sys.executable


def render_script(exp: Experiment, prof: Profile, sweep_dir: Path) -> str:
    import jinja2

    r = exp.resources
    env = jinja2.Environment(loader=jinja2.PackageLoader("vitbench.sweep", "templates"),
                             keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    gres = None
    if prof.gres and prof.gpus_per_node > 0 and r.accelerator != "cpu":
        gres = prof.gres.replace("{gpus}", str(r.devices))
    packed = r.runs_per_device > 1
    return env.get_template("sbatch.j2").render(
        runs_per_device=r.runs_per_device, packed=packed,
        mps=packed and prof.mps and prof.gpus_per_node > 0 and r.accelerator != "cpu",
        name=exp.name, partition=prof.partition, account=prof.account, qos=prof.qos,
        nodes=r.nodes, devices=r.devices, gres=gres, cpus_per_task=r.cpus_per_task or prof.cpus_per_task,
        mem=r.mem, mem_per_cpu=prof.mem_per_cpu, time=r.time or prof.time,
        sbatch_extra=prof.sbatch_extra, setup=prof.setup, python=shlex.quote(python_command(prof)),
        sweep_dir=shlex.quote(str(sweep_dir)),
    )


def array_spec(indices: list[int], throttle: int) -> str:
    """[0,1,2,5] -> '0-2,5%T'."""
    idx = sorted(set(indices))
    parts, start = [], idx[0]
    for a, b in zip(idx, idx[1:] + [None]):
        if b != a + 1:
            parts.append(str(start) if start == a else f"{start}-{a}")
            start = b
    return ",".join(parts) + f"%{throttle}"


@dataclass
class Submission:
    group: str
    tasks: list  # task ids
    indices: list  # array indices
    dependency: Optional[str] = None  # "main" (the new main job) or a job id, or None

    def argv(self, script: Path, throttle: int, main_job: str | None) -> list[str]:
        cmd = ["sbatch", "--parsable", f"--array={array_spec(self.indices, throttle)}"]
        if self.dependency is not None:
            dep = main_job if self.dependency == MAIN_GROUP else self.dependency
            cmd += [f"--dependency=aftercorr:{dep}", "--kill-on-invalid-dep=yes"]
        return cmd + [str(script), self.group]


def teacher_jobs(tasks: Sequence[Task], task_ids: list[int], states: dict[int, TaskState]) -> dict[int, str | None]:
    """Where the teacher of each student in ``task_ids`` is, for :func:`plan_submissions`.

    "main": submitted now with it (so in the new main array); a job id: queued or running in that
    job; None: done.
    """
    submitted = set(task_ids)
    out: dict[int, str | None] = {}
    for i in task_ids:
        tid = tasks[i].teacher
        if tid is None:
            continue
        if tid in submitted:
            out[tid] = MAIN_GROUP
            continue
        s = states[tid]
        out[tid] = s.job.split("_")[0] if s.state in ("running", "pending") and s.job and "_" in s.job else None
    return out


def plan_submissions(tasks: Sequence[Task], task_ids: list[int],
                     teacher_job: dict[int, str | None]) -> list[Submission]:
    """Group ``task_ids`` into arrays; ``teacher_job[tid]`` says where a student's teacher is (:func:`teacher_jobs`).

    A student pack runs all its unfinished students, so it is submitted once, with
    one dependency for all of them: on the new main array if any of their teachers
    is in it, else on the job running them, else none.
    """
    subs: list[Submission] = []
    main = [i for i in task_ids if tasks[i].group == MAIN_GROUP]
    if main:
        subs.append(Submission(MAIN_GROUP, main, [tasks[i].array_index for i in main]))
    packs: dict[tuple[str, int], list[int]] = {}
    for i in task_ids:
        if tasks[i].group != MAIN_GROUP:
            packs.setdefault((tasks[i].group, tasks[i].array_index), []).append(i)
    students: dict[tuple[str, str | None], list[int]] = {}
    for (group, _), ids in packs.items():
        deps = {teacher_job.get(tasks[i].teacher) for i in ids}
        dep = MAIN_GROUP if MAIN_GROUP in deps else next((d for d in deps if d is not None), None)
        students.setdefault((group, dep), []).extend(ids)
    for (group, dep), ids in students.items():
        subs.append(Submission(group, ids, [tasks[i].array_index for i in ids], dep))
    return subs


def find_sbatch() -> str:
    path = shutil.which("sbatch")
    if path is None:
        raise VitbenchError("sbatch not found: this machine is not a SLURM login node; "
                            "use `vitbench sweep run EXP` to run the sweep locally")
    return path


def sbatch(argv: list[str]) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise VitbenchError(f"{' '.join(argv[:3])} failed: {e}") from None
    if proc.returncode != 0:
        msg = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        raise VitbenchError(f"sbatch refused the job ({msg[-1] if msg else 'exit ' + str(proc.returncode)}): "
                            "check the profile (partition, account, qos, time)")
    return proc.stdout.strip().split(";")[0]


def submit(plan: SweepPlan, task_ids: list[int], states: dict[int, TaskState], profile: Profile,
           out=None) -> list[str]:
    """Submit ``task_ids`` (unfinished: ``states`` says where their teachers are), main array first.

    Records each submission in jobs.json; returns the job ids.
    """
    out = out or sys.stdout
    subs = plan_submissions(plan.tasks, task_ids, teacher_jobs(plan.tasks, task_ids, states))
    script = plan.sweep_dir / "sweep.sbatch"
    main_job = None
    ids = []
    for sub in subs:
        argv = sub.argv(script, profile.max_concurrent, main_job)
        job = sbatch(argv)
        if sub.group == MAIN_GROUP:
            main_job = job
        ids.append(job)
        record_submission(plan.sweep_dir, "slurm", job, sub.group, sub.indices, sub.tasks,
                          argv=argv, profile=profile.path)
        packs = f" in {len(set(sub.indices))} array element(s)" if len(set(sub.indices)) != len(sub.tasks) else ""
        print(f"submitted {job}: {sub.group} ({len(sub.tasks)} task(s){packs}): "
              f"{' '.join(shlex.quote(a) for a in argv)}", file=out, flush=True)
    return ids


def dry_run_lines(subs: list[Submission], script: Path, throttle: int) -> list[str]:
    return [" ".join(shlex.quote(a) for a in s.argv(script, throttle, "<main-job-id>")) for s in subs]
