"""``vitbench sweep submit`` on the real single-node SLURM test cluster.

Job arrays, a 2-task DDP job (gloo on CPU), SIGUSR1 -> hpc checkpoint ->
requeue -> resume, a distilled task waiting for its teacher, ``resume``
after a cancelled task, and packed elements (``runs_per_device: 2``). Real training of micro presets on a tiny copy of
Fashion-MNIST (``tiny_fashion_mnist``); no mocks.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest
import yaml

try:
    from slurm_cluster import squeue_states
except ImportError:
    from tests.slurm_cluster import squeue_states

pytestmark = pytest.mark.slurm


def _experiment(tmp_path: Path, dataset: str, name: str, **changes) -> Path:
    exp = {
        "name": name, "dataset": dataset, "samples_per_class": [10, 20], "seeds": [0],
        "budget": {"max_epochs": 1}, "backbones": [{"name": "resnet"}],
        "train": {"data": {"batch_size": 32}}, "resources": {"accelerator": "cpu"},
        "wandb": {"mode": "disabled"},
    }
    exp.update(changes)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(exp, sort_keys=False))
    return path


class Cluster:
    """The CLI in this process, talking to the test cluster (SLURM_CONF in os.environ)."""

    def __init__(self, info, capsys=None):
        self.info, self.env = info, info["env"]

    def cli(self, *args) -> tuple[int, str]:
        import contextlib
        import io

        from vitbench.cli import main

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main([str(a) for a in args])
        return rc, out.getvalue() + err.getvalue()

    def submit(self, exp: Path, sweep_dir: Path) -> tuple[Path, list[dict]]:
        rc, out = self.cli("sweep", "submit", exp, "--profile", "local", "--sweep-dir", sweep_dir)
        assert rc == 0, out
        return sweep_dir, json.loads((sweep_dir / "sweep.json").read_text())["tasks"]

    def states(self, sweep_dir: Path) -> list[dict]:
        rc, out = self.cli("sweep", "status", sweep_dir, "--json")
        assert rc == 0, out
        return json.loads(out)

    def wait(self, sweep_dir: Path, predicate, timeout: float, what: str, poll: float = 1.0):
        deadline = time.monotonic() + timeout
        while True:
            rows = self.states(sweep_dir)
            if predicate(rows):
                return rows
            if time.monotonic() > deadline:
                logs = "\n".join(p.read_text()[-1500:] for p in sorted((sweep_dir / "logs").glob("*.out")))
                raise TimeoutError(f"timed out after {timeout} s waiting for {what}: {rows}\n{logs}")
            time.sleep(poll)

    def wait_done(self, sweep_dir: Path, timeout: float):
        return self.wait(sweep_dir, lambda rows: all(r["state"] in ("done", "failed") for r in rows), timeout,
                         "all tasks to end")

    def scontrol(self, *args):
        return subprocess.run(["scontrol", *args], env=self.env, capture_output=True, text=True, timeout=30)


@pytest.fixture(scope="module")
def cluster(slurm_cluster):
    with pytest.MonkeyPatch.context() as mp:
        for key, value in slurm_cluster["env"].items():
            if key in ("SLURM_CONF", "PATH"):
                mp.setenv(key, value)
        for key in list(os.environ):
            if key.startswith(("SLURM_", "SBATCH_", "SRUN_")) and key != "SLURM_CONF":
                mp.delenv(key)
        yield Cluster(slurm_cluster)


def _results(task: dict) -> dict:
    return json.loads(Path(task["run_dir"], "results.json").read_text())


# ------------------------------------------------- (a) + (d): arrays and a teacher

@pytest.fixture(scope="module")
def array_sweep(cluster, tiny_fashion_mnist, tmp_path_factory):
    """resnet + vit at two sizes (one main array), deit distilled from resnet (a dependent array)."""
    tmp = tmp_path_factory.mktemp("array")
    exp = _experiment(tmp, tiny_fashion_mnist, "arr", backbones=[
        {"name": "resnet"}, {"name": "vit"},
        {"name": "deit", "label": "deit_kd", "teacher": "resnet", "distillation": "soft"}])
    t0 = time.monotonic()
    sweep_dir, tasks = cluster.submit(exp, tmp / "sweep")
    rows = cluster.wait_done(sweep_dir, timeout=240)
    return sweep_dir, tasks, rows, time.monotonic() - t0


def test_job_array_runs_every_task(array_sweep):
    sweep_dir, tasks, rows, seconds = array_sweep
    print(f"array sweep: {len(tasks)} tasks in {seconds:.0f} s")
    assert [r["state"] for r in rows] == ["done"] * 6, rows
    jobs = json.loads((sweep_dir / "jobs.json").read_text())
    assert jobs["mode"] == "slurm"
    main, students = jobs["submissions"]
    assert (main["group"], main["indices"], main["tasks"]) == ("main", [0, 1, 2, 3], [0, 1, 2, 3])
    assert any(a.startswith("--array=0-3%") for a in main["argv"])
    for t in tasks:
        res = _results(t)
        assert ((res["backbone"], res["samples_per_class"], res["sweep"])
                == (t["backbone"], t["samples_per_class"], "arr"))
        assert res["world_size"] == 1
    assert (sweep_dir / "sweep.sbatch").read_text().startswith("#!/bin/bash")
    assert sorted(p.name for p in (sweep_dir / "logs").glob("*.out")) == sorted(
        f"{s['job']}_{i}.out" for s in (main, students) for i in s["indices"])


def test_distilled_task_waits_for_its_teacher_and_uses_it(array_sweep):
    sweep_dir, tasks, rows, _ = array_sweep
    jobs = json.loads((sweep_dir / "jobs.json").read_text())
    main, students = jobs["submissions"]
    assert students["group"] == "deit_kd" and students["tasks"] == [4, 5]
    assert students["indices"] == [0, 1]  # each student runs at its teacher's array index
    assert f"--dependency=aftercorr:{main['job']}" in students["argv"]
    for student in tasks[4:]:
        teacher = tasks[student["teacher"]]
        assert teacher["label"] == "resnet" and teacher["samples_per_class"] == student["samples_per_class"]
        res = _results(student)
        assert res["teacher"] == teacher["run_dir"] and res["distillation"] == "soft"
        # the student's run started (config.yaml written) after its teacher's results.json
        teacher_done = Path(teacher["run_dir"], "results.json").stat().st_mtime
        log = (sweep_dir / "logs" / f"{students['job']}_{student['array_index']}.out").read_text()
        assert Path(student["run_dir"], "config.yaml").stat().st_mtime >= teacher_done, log


# ---------------------------------------------------------------------- (b) DDP

def test_two_task_ddp_job_splits_each_epoch_across_ranks(cluster, tiny_fashion_mnist, tmp_path):
    """2 ranks (srun --ntasks-per-node=2, gloo on CPU): each epoch is n_train / (batch x 2) steps.

    With 160 training images and batch 20, one process would take 8 steps per
    epoch; two ranks sharing the epoch through Lightning's DistributedSampler
    take 4 (160 = 4 x 20 x 2: no padding, every image once).
    """
    exp = _experiment(tmp_path, tiny_fashion_mnist, "ddp", samples_per_class=[16], budget={"max_epochs": 2},
                      train={"data": {"batch_size": 20}}, resources={"accelerator": "cpu", "devices": 2})
    t0 = time.monotonic()
    sweep_dir, (task,) = cluster.submit(exp, tmp_path / "sweep")
    assert "#SBATCH --ntasks-per-node=2" in (sweep_dir / "sweep.sbatch").read_text()
    assert task["config"]["trainer"]["devices"] == 2 and task["config"]["trainer"]["strategy"] == "ddp"
    rows = cluster.wait_done(sweep_dir, timeout=150)
    print(f"ddp job: {time.monotonic() - t0:.0f} s")
    assert rows[0]["state"] == "done", (sweep_dir / "logs").iterdir()
    res = _results(task)
    assert res["world_size"] == 2 and res["n_train"] == 160
    metrics = [json.loads(ln) for ln in Path(task["run_dir"], "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [0, 1]
    steps_per_epoch = metrics[0]["step"]
    assert metrics[1]["step"] == 2 * steps_per_epoch
    assert steps_per_epoch * 20 * res["world_size"] == res["n_train"]  # 4 x 20 x 2 = 160


# ------------------------------------------------------------- (c) requeue

def test_usr1_checkpoints_requeues_and_resumes_the_same_run(cluster, tiny_fashion_mnist, tmp_path):
    exp = _experiment(tmp_path, tiny_fashion_mnist, "rq", samples_per_class=[30], budget={"max_epochs": 8},
                      train={"data": {"batch_size": 10}}, wandb={"mode": "offline"})
    t0 = time.monotonic()
    sweep_dir, (task,) = cluster.submit(exp, tmp_path / "sweep")
    run = Path(task["run_dir"])
    job = json.loads((sweep_dir / "jobs.json").read_text())["submissions"][0]["job"] + "_0"

    def epochs():
        path = run / "metrics.jsonl"
        return [json.loads(ln)["epoch"] for ln in path.read_text().splitlines()] if path.is_file() else []

    deadline = time.monotonic() + 90
    while not epochs():  # the trainer (and its SIGUSR1 handler) is running
        assert time.monotonic() < deadline, f"training did not start: {cluster.states(sweep_dir)}"
        time.sleep(0.3)
    subprocess.run(["scancel", "--signal=USR1", job], env=cluster.env, check=True, timeout=30)
    signalled_at = len(epochs())

    deadline = time.monotonic() + 60
    while True:  # Lightning saves hpc_ckpt_1.ckpt and runs `scontrol requeue`
        states = squeue_states(job, cluster.env)
        # Released before SLURM has set the BeginTime, the job dies ("credential revoked").
        if states and states[0][1:] == ("PENDING", "BeginTime") and list(run.glob("hpc_ckpt_*.ckpt")):
            time.sleep(2)
            break
        assert not (run / "results.json").exists(), "finished before the signal arrived: make the run longer"
        assert time.monotonic() < deadline, f"not requeued: {states}"
        time.sleep(0.3)
    # the test cluster delays a requeued job (BeginTime) or holds it: release it now
    cluster.scontrol("update", f"JobId={job}", "StartTime=now")
    cluster.scontrol("release", job)
    rows = cluster.wait_done(sweep_dir, timeout=120)
    print(f"requeue test: {time.monotonic() - t0:.0f} s (signalled after {signalled_at} epoch(s))")

    assert rows[0]["state"] == "done"
    res = _results(task)
    assert res["epochs"] == 8 or res["steps"] == 8 * 30
    assert list(run.glob("results.json")) == [run / "results.json"]
    assert not list(run.glob("hpc_ckpt_*.ckpt"))  # deleted after success
    # epochs continued after the restart instead of starting over
    seen = epochs()
    assert seen == sorted(set(seen)) and seen[-1] == 7 and seen.count(0) == 1, seen
    # one W&B run: both starts wrote offline runs under the same id
    wandb_runs = sorted((run / "wandb").glob("offline-run-*"))
    assert len(wandb_runs) == 2 and {p.name.rsplit("-", 1)[1] for p in wandb_runs} == {task["wandb_id"]}
    assert res["wandb_run_id"] == task["wandb_id"]
    log = (sweep_dir / "logs" / f"{job}.out").read_text()
    assert "restart 0" in log and "restart 1" in log


# ------------------------------------------------------------ (e) resume

def test_resume_resubmits_only_the_cancelled_task(cluster, tiny_fashion_mnist, tmp_path):
    exp = _experiment(tmp_path, tiny_fashion_mnist, "rs")
    t0 = time.monotonic()
    sweep_dir, tasks = cluster.submit(exp, tmp_path / "sweep")
    job = json.loads((sweep_dir / "jobs.json").read_text())["submissions"][0]["job"]
    subprocess.run(["scancel", f"{job}_1"], env=cluster.env, check=True, timeout=30)
    rows = cluster.wait_done(sweep_dir, timeout=120)
    assert [r["state"] for r in rows] == ["done", "failed"], rows
    done_mtime = Path(tasks[0]["run_dir"], "results.json").stat().st_mtime_ns

    rc, out = cluster.cli("sweep", "resume", sweep_dir)
    assert rc == 0, out
    subs = json.loads((sweep_dir / "jobs.json").read_text())["submissions"]
    assert len(subs) == 2 and (subs[1]["group"], subs[1]["tasks"], subs[1]["indices"]) == ("main", [1], [1])
    rows = cluster.wait_done(sweep_dir, timeout=120)
    print(f"resume test: {time.monotonic() - t0:.0f} s")
    assert [r["state"] for r in rows] == ["done", "done"], rows
    assert rows[1]["job"] == f"{subs[1]['job']}_1"
    assert Path(tasks[0]["run_dir"], "results.json").stat().st_mtime_ns == done_mtime
    rc, out = cluster.cli("sweep", "resume", sweep_dir)
    assert rc == 0 and "nothing to resume" in out


# ------------------------------------------------------- (f) packing: runs_per_device

def _batch_log(sweep_dir: Path, element: str) -> str:
    return (sweep_dir / "logs" / f"{element}.out").read_text()


def test_packed_elements_run_two_tasks_each_and_resume_reruns_only_the_failed_pack(cluster, tiny_fashion_mnist,
                                                                                    tmp_path):
    """runs_per_device 2: resnet at 3 sizes in main elements {0: tasks 0, 1; 1: task 2 + an empty slot},
    their students in deit_kd elements {0: 3, 4; 1: 5}. Task 1 fails: its whole element fails, so
    student element 0 is cancelled; resume resubmits main element 0 (task 0 inside is skipped) and
    student element 0 after it, nothing else."""
    exp = _experiment(tmp_path, tiny_fashion_mnist, "pk", samples_per_class=[10, 20, 30],
                      backbones=[{"name": "resnet"}, {"name": "deit", "label": "deit_kd", "teacher": "resnet"}],
                      resources={"accelerator": "cpu", "runs_per_device": 2})
    t0 = time.monotonic()
    rc, out = cluster.cli("sweep", "plan", exp, "--sweep-dir", tmp_path / "sweep")
    assert rc == 0, out
    tasks = json.loads((tmp_path / "sweep" / "sweep.json").read_text())["tasks"]
    blocker = Path(tasks[1]["run_dir"])  # not a vitbench run dir: task 1 fails at once
    blocker.mkdir(parents=True)
    (blocker / "stray.txt").write_text("x")
    sweep_dir, _ = cluster.submit(exp, tmp_path / "sweep")
    rows = cluster.wait_done(sweep_dir, timeout=240)
    assert [r["state"] for r in rows] == ["done", "failed", "done", "failed", "failed", "done"], rows

    main, students = json.loads((sweep_dir / "jobs.json").read_text())["submissions"]
    assert (main["tasks"], main["indices"]) == ([0, 1, 2], [0, 0, 1]) and "--array=0-1%4" in main["argv"]
    assert (students["tasks"], students["indices"]) == ([3, 4, 5], [0, 0, 1])
    assert f"--dependency=aftercorr:{main['job']}" in students["argv"]
    logs = sweep_dir / "logs"
    element0 = _batch_log(sweep_dir, f"{main['job']}_0")
    assert "pack 0: 2 runs at once" in element0 and "slot 0: exit 0" in element0 and "slot 1: exit 2" in element0
    assert "exists and is not a vitbench run dir" in (logs / f"{main['job']}_0.1.out").read_text()
    assert "main pack 1 slot 1: no task" in (logs / f"{main['job']}_1.1.out").read_text()
    student = tasks[5]  # its teacher's element succeeded: it ran, after its teacher
    assert _results(student)["teacher"] == tasks[2]["run_dir"]
    assert (Path(student["run_dir"], "config.yaml").stat().st_mtime
            >= Path(tasks[2]["run_dir"], "results.json").stat().st_mtime)
    done_mtime = Path(tasks[0]["run_dir"], "results.json").stat().st_mtime_ns

    (blocker / "stray.txt").unlink()
    rc, out = cluster.cli("sweep", "resume", sweep_dir)
    assert rc == 0, out
    subs = json.loads((sweep_dir / "jobs.json").read_text())["submissions"][2:]
    assert [(s["group"], s["tasks"], s["indices"]) for s in subs] == [("main", [1], [0]), ("deit_kd", [3, 4], [0, 0])]
    assert f"--dependency=aftercorr:{subs[0]['job']}" in subs[1]["argv"]
    rows = cluster.wait_done(sweep_dir, timeout=240)
    print(f"packed sweep with a failure and a resume: {time.monotonic() - t0:.0f} s")
    assert [r["state"] for r in rows] == ["done"] * 6, rows
    assert Path(tasks[0]["run_dir"], "results.json").stat().st_mtime_ns == done_mtime
    assert "task 0 resnet/spc10-s0: already done" in (logs / f"{subs[0]['job']}_0.0.out").read_text()
    for t in tasks:
        res = _results(t)
        assert (res["label"], res["samples_per_class"], res["world_size"]) == (t["label"], t["samples_per_class"], 1)
    # the two runs of a pack run side by side: the element launched both steps before either run
    # finished (launch times from its log, not the runs' own first writes: a tiny run can finish within
    # the other's start-up), and srun never held a step back waiting for the element's resources
    element = _batch_log(sweep_dir, f"{subs[1]['job']}_0")
    launched = [datetime.strptime(m, "%Y-%m-%d %H:%M:%S.%f").timestamp()
                for m in re.findall(r"^\[([\d-]+ [\d:.]+)\] slot \d: started$", element, re.M)]
    finished = [Path(tasks[i]["run_dir"], "results.json").stat().st_mtime for i in (3, 4)]
    assert len(launched) == 2 and max(launched) < min(finished), (element, finished)
    assert "step creation temporarily disabled" not in element, element
    for i in (3, 4):
        assert _results(tasks[i])["teacher"] == tasks[tasks[i]["teacher"]]["run_dir"]
        assert (Path(tasks[i]["run_dir"], "config.yaml").stat().st_mtime
                >= Path(tasks[1]["run_dir"], "results.json").stat().st_mtime)


def test_packed_usr1_saves_every_run_then_requeues_once_and_resumes_both(cluster, tiny_fashion_mnist, tmp_path):
    """SIGUSR1 to the batch shell (what --signal=B:USR1@120 sends): both runs of the element save an
    hpc checkpoint and stop, the shell requeues the element once, and the requeued element resumes both."""
    exp = _experiment(tmp_path, tiny_fashion_mnist, "prq", samples_per_class=[30], seeds=[0, 1],
                      budget={"max_epochs": 12}, train={"data": {"batch_size": 10}}, wandb={"mode": "offline"},
                      resources={"accelerator": "cpu", "runs_per_device": 2})
    t0 = time.monotonic()
    sweep_dir, tasks = cluster.submit(exp, tmp_path / "sweep")
    runs = [Path(t["run_dir"]) for t in tasks]
    job = json.loads((sweep_dir / "jobs.json").read_text())["submissions"][0]["job"] + "_0"

    def epochs(run):
        path = run / "metrics.jsonl"
        return [json.loads(ln)["epoch"] for ln in path.read_text().splitlines()] if path.is_file() else []

    deadline = time.monotonic() + 120
    while not all(epochs(r) for r in runs):  # both trainers (and their SIGUSR1 handlers) are running
        assert time.monotonic() < deadline, f"training did not start: {cluster.states(sweep_dir)}"
        time.sleep(0.3)
    subprocess.run(["scancel", "--signal=USR1", "--batch", job], env=cluster.env, check=True, timeout=30)
    signalled_at = [len(epochs(r)) for r in runs]

    deadline = time.monotonic() + 90
    while True:  # each run saves hpc_ckpt_1.ckpt and exits; then the batch shell runs `scontrol requeue`
        states = squeue_states(job, cluster.env)
        if states and states[0][1:] == ("PENDING", "BeginTime"):
            assert all(list(r.glob("hpc_ckpt_*.ckpt")) for r in runs), "requeued before every run had saved"
            time.sleep(2)
            break
        assert not any((r / "results.json").exists() for r in runs), (
            "finished before the signal arrived: make the runs longer"
        )
        assert time.monotonic() < deadline, f"not requeued: {states}"
        time.sleep(0.3)
    cluster.scontrol("update", f"JobId={job}", "StartTime=now")
    cluster.scontrol("release", job)
    rows = cluster.wait_done(sweep_dir, timeout=180)
    print(f"packed requeue test: {time.monotonic() - t0:.0f} s (signalled after {signalled_at} epoch(s))")

    assert [r["state"] for r in rows] == ["done", "done"], rows
    log = _batch_log(sweep_dir, job)
    assert "restart 0" in log and "restart 1" in log and "restart 2" not in log, log
    assert log.count("SIGUSR1: every run saves a checkpoint") == 1 and log.count(f"requeueing {job}") == 1, log
    for slot, (task, run) in enumerate(zip(tasks, runs)):
        res = _results(task)
        assert res["epochs"] == 12 or res["steps"] == 12 * 30
        assert not list(run.glob("hpc_ckpt_*.ckpt"))  # deleted after success
        seen = epochs(run)  # continued after the restart instead of starting over
        assert seen == sorted(set(seen)) and seen[-1] == 11 and seen.count(0) == 1, seen
        wandb_runs = sorted((run / "wandb").glob("offline-run-*"))  # both starts: one W&B id
        assert len(wandb_runs) == 2 and {p.name.rsplit("-", 1)[1] for p in wandb_runs} == {task["wandb_id"]}
        assert res["wandb_run_id"] == task["wandb_id"]
        slot_log = (sweep_dir / "logs" / f"{job}.{slot}.out").read_text()
        assert slot_log.count(f"SIGUSR1: saved {run}/hpc_ckpt_1.ckpt") == 1, slot_log
        assert f"Restored all states from the checkpoint at {run}/hpc_ckpt_1.ckpt" in slot_log, slot_log
