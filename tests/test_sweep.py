"""``vitbench sweep``: experiment files, planning, local runs, status/resume and bad input.

Real training (micro presets on tiny Fashion-MNIST subsets) through the real
CLI in subprocesses; no mocks.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "experiments"


class Result:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def cli(capsys):
    """The real ``vitbench`` CLI in this process (fast: no new interpreter per call)."""
    from vitbench.cli import main

    def call(*args):
        capsys.readouterr()
        rc = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return Result(rc, out, err)

    return call


def tiny_experiment(tmp_path: Path, name="tiny", **changes) -> Path:
    """A sweep whose tasks each train a few seconds: resnet + deit distilled from it, 2 sizes."""
    exp = {
        "name": name,
        "dataset": "fashion_mnist",
        "samples_per_class": [10, 20],
        "seeds": [0],
        "budget": {"max_epochs": 1},
        "backbones": [
            {"name": "resnet"},
            {"name": "deit", "label": "deit_kd", "teacher": "resnet", "distillation": "hard"},
        ],
        "train": {"data": {"batch_size": 32}},
        "resources": {"accelerator": "cpu"},
        "wandb": {"mode": "disabled"},
        "local": {"parallel": 2},
    }
    for key, value in changes.items():
        if value is None:
            exp.pop(key, None)
        else:
            exp[key] = value
    path = tmp_path / f"{name}.yaml"
    path.write_text("# test experiment\n" + yaml.safe_dump(exp, sort_keys=False))
    return path


def assert_user_error(proc, *fragments):
    assert proc.returncode == 2, proc.stdout + proc.stderr
    err = proc.stderr.strip()
    assert err.startswith("vitbench: error:") and "\n" not in err and "Traceback" not in err, err
    for f in fragments:
        assert f in err, err


# --------------------------------------------------------------------- planning

def test_plan_json_lists_tasks_with_resolved_configs(tmp_path, cli):
    exp = tiny_experiment(tmp_path)
    sweep_dir = tmp_path / "sweep"
    proc = cli("sweep", "plan", exp, "--sweep-dir", sweep_dir, "--json")
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    tasks = plan["tasks"]
    assert [(t["label"], t["samples_per_class"], t["teacher"]) for t in tasks] == [
        ("resnet", 10, None), ("resnet", 20, None), ("deit_kd", 10, 0), ("deit_kd", 20, 1)]
    assert [t["group"] for t in tasks] == ["main", "main", "deit_kd", "deit_kd"]
    assert [t["array_index"] for t in tasks] == [0, 1, 0, 1]  # a student runs at its teacher's index
    assert len({t["wandb_id"] for t in tasks}) == 4 and all(len(t["wandb_id"]) == 16 for t in tasks)
    student = tasks[3]["config"]
    assert student["distill"]["teacher"] == tasks[1]["run_dir"] == str(sweep_dir.resolve() / "runs/resnet/spc20-s0")
    assert student["out"] == str(sweep_dir.resolve() / "runs/deit_kd/spc20-s0")
    assert student["data"]["samples_per_class"] == 20 and student["budget"]["max_epochs"] == 1
    assert student["wandb"]["group"] == student["sweep"] == "tiny" and student["wandb"]["id"] == tasks[3]["wandb_id"]
    assert [t["config"]["label"] for t in tasks] == ["resnet", "resnet", "deit_kd", "deit_kd"]  # reports group by it
    assert student["trainer"] == {**student["trainer"], "accelerator": "cpu", "devices": 1, "num_nodes": 1}
    assert json.loads((sweep_dir / "sweep.json").read_text()) == plan
    assert (sweep_dir / "experiment.yaml").read_text() == exp.read_text()

    # the same experiment again: a no-op; a changed one: refused
    before = (sweep_dir / "sweep.json").stat().st_mtime_ns
    assert cli("sweep", "plan", exp, "--sweep-dir", sweep_dir).returncode == 0
    assert (sweep_dir / "sweep.json").stat().st_mtime_ns == before
    changed = tiny_experiment(tmp_path, seeds=[0, 1])
    assert_user_error(cli("sweep", "plan", changed, "--sweep-dir", sweep_dir), "another version")
    assert (sweep_dir / "sweep.json").stat().st_mtime_ns == before


@pytest.mark.parametrize("name,n_tasks", [("smoke", 12), ("fashion_mnist", 6 * 7 * 3), ("cifar10", None)])
def test_shipped_experiments_plan(tmp_path, cli, name, n_tasks):
    path = EXPERIMENTS / f"{name}.yaml"
    text = path.read_text()
    assert text.startswith("#") and "vitbench sweep" in text.split("\nname:")[0]  # command/cost/expected header
    proc = cli("sweep", "plan", path, "--sweep-dir", tmp_path / name, "--json")
    assert proc.returncode == 0, proc.stderr
    tasks = json.loads(proc.stdout)["tasks"]
    if n_tasks is not None:
        assert len(tasks) == n_tasks
    students = [t for t in tasks if t["teacher"] is not None]
    assert students and all(tasks[t["teacher"]]["backbone"] == "resnet" for t in students)
    assert all((tasks[t["teacher"]]["fraction"], tasks[t["teacher"]]["seed"]) == (t["fraction"], t["seed"]) for t in students)


def test_submit_dry_run_prints_script_and_commands(tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exp = tiny_experiment(tmp_path)
    sweep_dir = tmp_path / "sweep"
    proc = cli("sweep", "submit", exp, "--profile", "local", "--sweep-dir", sweep_dir, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for line in ("#SBATCH --ntasks-per-node=1", "#SBATCH --cpus-per-task=1", "#SBATCH --signal=USR1@120",
                 "#SBATCH --requeue", "#SBATCH --open-mode=append", f"#SBATCH --output={sweep_dir.resolve()}/logs/%A_%a.out",
                 f'srun {sys.executable} -m vitbench sweep run-task {sweep_dir.resolve()} --group "$GROUP" --array-index "$SLURM_ARRAY_TASK_ID"'):
        assert line in out, out
    cmds = [l for l in out.splitlines() if l.startswith("sbatch ")]
    assert cmds == [
        f"sbatch --parsable --array=0-1%4 {sweep_dir.resolve()}/sweep.sbatch main",
        f"sbatch --parsable --array=0-1%4 '--dependency=aftercorr:<main-job-id>' --kill-on-invalid-dep=yes "
        f"{sweep_dir.resolve()}/sweep.sbatch deit_kd",
    ]
    assert not sweep_dir.exists()


# ------------------------------------------------------------------- bad input

def _write(tmp_path, text):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    return p


BAD_EXPERIMENTS = {
    "teacherless distillation": ({"backbones": [{"name": "resnet"}, {"name": "deit", "distillation": "hard"}]}, "no teacher"),
    "unknown teacher": ({"backbones": [{"name": "resnet"}, {"name": "deit", "teacher": "resnt"}]}, "did you mean 'resnet'"),
    "unknown backbone": ({"backbones": [{"name": "vitt"}]}, "unknown backbone 'vitt'"),
    "empty fractions": ({"samples_per_class": None, "fractions": []}, "non-empty list"),
    "zero fraction": ({"samples_per_class": None, "fractions": [0.0, 0.5]}, "not in (0, 1]"),
    "fraction above 1": ({"samples_per_class": None, "fractions": [1.5]}, "not in (0, 1]"),
    "fraction not a number": ({"samples_per_class": None, "fractions": ["half"]}, "not a number"),
    "unknown key": ({"seed": [0]}, "did you mean 'seeds'"),
    "unknown train key": ({"train": {"optim": {"learning_rate": 0.1}}}, "unknown config key 'optim.learning_rate'"),
    "sweep-owned train key": ({"train": {"seed": 3}}, "set by the sweep"),
    "duplicate label": ({"backbones": [{"name": "resnet"}, {"name": "resnet"}]}, "used twice"),
    "colliding fractions": ({"samples_per_class": None, "fractions": [0.1234561, 0.1234564]}, "same run dirs"),
    "sweep-owned label": ({"train": {"label": "x"}}, "set by the sweep"),
}


@pytest.mark.parametrize("case,command", [(c, "plan") for c in BAD_EXPERIMENTS] + [
    ("teacherless distillation", "run"), ("zero fraction", "run"), ("unknown backbone", "submit"),
    ("unknown teacher", "submit")])
def test_bad_experiment_is_a_one_line_error_and_writes_nothing(tmp_path, cli, monkeypatch, case, command):
    monkeypatch.chdir(tmp_path)
    changes, message = BAD_EXPERIMENTS[case]
    exp = tiny_experiment(tmp_path, **changes)
    extra = ["--profile", "local"] if command == "submit" else []
    proc = cli("sweep", command, exp, "--sweep-dir", tmp_path / "sweep", *extra)
    assert_user_error(proc, message)
    assert not (tmp_path / "sweep").exists()


def test_unknown_profile_lists_the_available_ones(tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    proc = cli("sweep", "submit", tiny_experiment(tmp_path), "--profile", "nope", "--sweep-dir", tmp_path / "s")
    assert_user_error(proc, "unknown profile 'nope'", "local", "example-gpu-cluster")
    assert not (tmp_path / "s").exists()


def test_gpus_on_a_cpu_only_profile(tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exp = tiny_experiment(tmp_path, resources={"accelerator": "gpu", "devices": 1})
    proc = cli("sweep", "submit", exp, "--profile", "local", "--sweep-dir", tmp_path / "s")
    assert_user_error(proc, "gpus_per_node: 0")
    assert not (tmp_path / "s").exists()


def test_sbatch_not_found_points_to_local_runs(tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))  # python, but no SLURM client
    proc = cli("sweep", "submit", tiny_experiment(tmp_path), "--profile", "local", "--sweep-dir", tmp_path / "s")
    assert_user_error(proc, "sbatch not found", "vitbench sweep run")
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("command", ["status", "resume"])
def test_not_a_sweep_dir(tmp_path, cli, command):
    (tmp_path / "other").mkdir()
    assert_user_error(cli("sweep", command, tmp_path / "other"), "not a sweep dir")
    assert list((tmp_path / "other").iterdir()) == []


# ------------------------------------------------------------------- local runs

def test_local_run_trains_every_task_then_skips_them(tmp_path, cli, tiny_fashion_mnist):
    exp = tiny_experiment(tmp_path, dataset=tiny_fashion_mnist)
    sweep_dir = tmp_path / "sweep"
    t0 = time.monotonic()
    proc = cli("sweep", "run", exp, "--sweep-dir", sweep_dir)
    first = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tasks = json.loads((sweep_dir / "sweep.json").read_text())["tasks"]
    results = {t["name"]: json.loads(Path(t["run_dir"], "results.json").read_text()) for t in tasks}
    assert set(results) == {"resnet/spc10-s0", "resnet/spc20-s0", "deit_kd/spc10-s0", "deit_kd/spc20-s0"}
    assert results["deit_kd/spc20-s0"]["teacher"] == tasks[1]["run_dir"]
    assert results["deit_kd/spc20-s0"]["distillation"] == "hard"
    assert {r["n_train"] for r in results.values()} == {100, 200}
    # progress: a start and a done line per task, with the k/N count and test_acc
    out = proc.stdout
    assert out.count(" start ") == 4 and out.count(" done ") == 4 and "[4/4] done" in out and "test_acc" in out
    assert all((sweep_dir / "logs" / f"{t['name'].replace('/', '-')}.log").is_file() for t in tasks)
    # students started only after their teacher finished
    for t in tasks[2:]:
        teacher_done = Path(tasks[t["teacher"]]["run_dir"], "results.json").stat().st_mtime
        assert Path(t["run_dir"], "config.yaml").stat().st_mtime >= teacher_done

    status = json.loads(cli("sweep", "status", sweep_dir, "--json").stdout)
    assert [s["state"] for s in status] == ["done"] * 4
    assert set(status[0]) == {"task", "label", "fraction", "samples_per_class", "seed", "state", "run_dir", "job"}

    mtimes = {t["name"]: Path(t["run_dir"], "results.json").stat().st_mtime_ns for t in tasks}
    t0 = time.monotonic()
    again = cli("sweep", "run", exp, "--sweep-dir", sweep_dir)
    assert again.returncode == 0, again.stderr
    assert "4 task(s) already done" in again.stdout and " start " not in again.stdout
    assert time.monotonic() - t0 < first
    assert {t["name"]: Path(t["run_dir"], "results.json").stat().st_mtime_ns for t in tasks} == mtimes
    resume = cli("sweep", "resume", sweep_dir)
    assert resume.returncode == 0 and "nothing to resume" in resume.stdout


def test_local_failure_is_reported_and_resume_reruns_only_it(tmp_path, cli, tiny_fashion_mnist):
    """A task that fails does not stop the others; the exit status says so; resume reruns it."""
    exp = tiny_experiment(tmp_path, dataset=tiny_fashion_mnist, backbones=[{"name": "resnet"}], samples_per_class=[10, 20])
    sweep_dir = tmp_path / "sweep"
    assert cli("sweep", "plan", exp, "--sweep-dir", sweep_dir).returncode == 0
    tasks = json.loads((sweep_dir / "sweep.json").read_text())["tasks"]
    # Make task 1 fail: its run dir holds something that is not a vitbench run.
    blocker = Path(tasks[1]["run_dir"])
    blocker.mkdir(parents=True)
    (blocker / "stray.txt").write_text("x")
    proc = cli("sweep", "run", exp, "--sweep-dir", sweep_dir)
    assert proc.returncode == 1
    assert "FAILED resnet/spc20-s0" in proc.stdout and "[2/2]" in proc.stdout
    assert Path(tasks[0]["run_dir"], "results.json").is_file()
    states = [s["state"] for s in json.loads(cli("sweep", "status", sweep_dir, "--json").stdout)]
    assert states == ["done", "failed"]

    (blocker / "stray.txt").unlink()
    done_mtime = Path(tasks[0]["run_dir"], "results.json").stat().st_mtime_ns
    proc = cli("sweep", "resume", sweep_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "resuming 1 task(s): resnet/spc20-s0" in proc.stdout and proc.stdout.count(" start ") == 1
    assert Path(tasks[1]["run_dir"], "results.json").is_file()
    assert Path(tasks[0]["run_dir"], "results.json").stat().st_mtime_ns == done_mtime
