"""``vitbench sweep``: experiment files, planning, local runs, status/resume and bad input.

Real training (micro presets on tiny Fashion-MNIST subsets) through the real
CLI in subprocesses; no mocks.
"""

from __future__ import annotations

import json
import re
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


def test_a_sweep_planned_by_an_older_vitbench_is_the_same_sweep(tmp_path, cli):
    """sweep.json of an older version lacks keys added since (an entry's `train`, a config key): re-planning
    the unchanged experiment into it is a no-op, so `sweep run`/`resume` go on; a real change is still refused."""
    exp, sweep_dir = tiny_experiment(tmp_path), tmp_path / "sweep"
    assert cli("sweep", "plan", exp, "--sweep-dir", sweep_dir).returncode == 0
    plan = json.loads((sweep_dir / "sweep.json").read_text())
    for entry in plan["experiment"]["backbones"]:
        del entry["train"], entry["budget"]
    for task in plan["tasks"]:
        del task["config"]["trainer"]["compile"], task["config"]["optim"]["ema_decay"]
    (sweep_dir / "sweep.json").write_text(json.dumps(plan))
    before = (sweep_dir / "sweep.json").read_text()
    assert cli("sweep", "plan", exp, "--sweep-dir", sweep_dir).returncode == 0
    assert (sweep_dir / "sweep.json").read_text() == before
    assert_user_error(cli("sweep", "plan", tiny_experiment(tmp_path, seeds=[0, 1]), "--sweep-dir", sweep_dir),
                      "another version")


def test_a_family_recipe_applies_to_its_own_tasks_only(tmp_path, cli):
    exp = tiny_experiment(tmp_path, backbones=[
        {"name": "resnet"},
        {"name": "vit", "train": {"optim": {"lr": 0.004}}, "budget": {"max_epochs": 3, "min_steps": 50}}])
    proc = cli("sweep", "plan", exp, "--sweep-dir", tmp_path / "sweep", "--json")
    assert proc.returncode == 0, proc.stderr
    configs = {(t["label"], t["samples_per_class"]): t["config"] for t in json.loads(proc.stdout)["tasks"]}
    resnet, vit = configs[("resnet", 10)], configs[("vit", 10)]
    budget = {"max_steps": None, "cycles": 1, "min_cycles": 1}
    assert resnet["optim"]["lr"] == 1e-3 and resnet["budget"] == {**budget, "max_epochs": 1, "min_steps": None}
    assert vit["optim"]["lr"] == 0.004 and vit["budget"] == {**budget, "max_epochs": 3, "min_steps": 50}
    assert vit["data"]["batch_size"] == resnet["data"]["batch_size"] == 32  # the experiment's `train` still applies


def test_a_family_strategy_is_kept_on_multi_device_runs(tmp_path, cli):
    """Two devices per run: DDP, unless the entry's recipe chose its own strategy."""
    exp = tiny_experiment(tmp_path, resources={"accelerator": "cpu", "devices": 2}, backbones=[
        {"name": "resnet"}, {"name": "vit", "train": {"trainer": {"strategy": "ddp_spawn"}}}])
    proc = cli("sweep", "plan", exp, "--sweep-dir", tmp_path / "sweep", "--json")
    assert proc.returncode == 0, proc.stderr
    strategies = {t["label"]: t["config"]["trainer"]["strategy"] for t in json.loads(proc.stdout)["tasks"]}
    assert strategies == {"resnet": "ddp", "vit": "ddp_spawn"}


@pytest.mark.parametrize("name,n_tasks", [("smoke", 12), ("fashion_mnist", 6 * 7 * 3),
                                          ("fashion_mnist_micro", 6 * 4 * 3), ("cifar10", None)])
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
    same = ("fraction", "samples_per_class", "seed")  # a teacher trained on its student's subset
    assert all([tasks[t["teacher"]][k] for k in same] == [t[k] for k in same] for t in students)


def test_plan_of_a_thousand_tasks(tmp_path, cli):
    """6 labels (one distilled) x 10 fractions x 17 seeds: ids, names and teacher links stay consistent.
    (Its speed is a benchmark: benchmarks/bookkeeping.py.)"""
    fractions = [0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0]
    backbones = [{"name": n} for n in ("resnet", "vit", "swin", "pit", "deit")]
    backbones.append({"name": "deit", "label": "deit_kd", "teacher": "resnet"})
    exp = tiny_experiment(tmp_path, samples_per_class=None, fractions=fractions, seeds=list(range(17)),
                          backbones=backbones)
    sweep_dir = tmp_path / "sweep"
    proc = cli("sweep", "plan", exp, "--sweep-dir", sweep_dir)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"sweep 'tiny': 1020 task(s) in {sweep_dir.resolve()}")
    tasks = json.loads((sweep_dir / "sweep.json").read_text())["tasks"]
    assert [t["id"] for t in tasks] == list(range(1020))
    assert (len({t["name"] for t in tasks}) == len({t["run_dir"] for t in tasks})
            == len({t["wandb_id"] for t in tasks}) == 1020)
    assert [t["label"] for t in tasks[::170]] == ["resnet", "vit", "swin", "pit", "deit", "deit_kd"]
    main, students = tasks[:850], tasks[850:]
    assert all(t["group"] == "main" and t["array_index"] == t["id"] and t["teacher"] is None for t in main)
    for t in students:
        teacher = tasks[t["teacher"]]
        assert t["group"] == "deit_kd" and t["array_index"] == teacher["array_index"] and teacher["label"] == "resnet"
        assert (teacher["fraction"], teacher["seed"]) == (t["fraction"], t["seed"])
        assert t["config"]["distill"]["teacher"] == teacher["run_dir"] and t["config"]["distill"]["kind"] == "hard"
    assert {(t["fraction"], t["seed"]) for t in students} == {(f, s) for f in fractions for s in range(17)}
    assert cli("sweep", "status", sweep_dir).stdout.rstrip().endswith("not started: 1020  (of 1020)")


@pytest.mark.slow
def test_plan_estimate_times_each_backbone_here(tmp_path, cli, tiny_fashion_mnist):
    """Real timing on this CPU (micro presets): a row per label, the sweep's total, the plan still written, and
    with budget.cycles the cost if every run took all its cycles."""
    exp = tiny_experiment(tmp_path, dataset=tiny_fashion_mnist, budget={"max_epochs": 1, "cycles": 3, "min_cycles": 2})
    sweep_dir = tmp_path / "sweep"
    proc = cli("sweep", "plan", exp, "--sweep-dir", sweep_dir, "--estimate")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "4 task(s)" in out and (sweep_dir / "sweep.json").is_file()
    header = next(ln for ln in out.splitlines() if ln.startswith("estimate for sweep 'tiny'"))
    assert re.search(r"timed on cpu: [^,]+, \d+ thread\(s\) per run \(2 at a time\); start-up \d+\.\d s per run$",
                     header), header
    rows = {ln.split()[0]: ln.split() for ln in out.splitlines()
            if ln.split() and ln.split()[0] in ("resnet", "deit_kd") and ln.split()[1] == "micro"}
    assert set(rows) == {"resnet", "deit_kd"}
    for row in rows.values():
        assert float(row[2]) > 0 and row[3] == "2"  # s/step, runs
    total = next(ln for ln in out.splitlines() if ln.startswith("total: "))
    assert "total: 4 runs," in total and "wall at 2 run(s) at a time" in total
    assert any(ln.startswith("budget.cycles: that is every run stopping as soon as it may (converged after its "
                             "first cycle, or its budget.min_cycles); if every run took all its cycles, ")
               for ln in out.splitlines()), out
    assert "timed resnet:" in proc.stderr and "timed deit_kd:" in proc.stderr


def test_plan_estimate_and_json_is_a_one_line_error(tmp_path, cli):
    proc = cli("sweep", "plan", tiny_experiment(tmp_path), "--sweep-dir", tmp_path / "sweep", "--estimate", "--json")
    assert_user_error(proc, "pass one of them")
    assert not (tmp_path / "sweep").exists()


def test_submit_dry_run_prints_script_and_commands(tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exp = tiny_experiment(tmp_path)
    sweep_dir = tmp_path / "sweep"
    proc = cli("sweep", "submit", exp, "--profile", "local", "--sweep-dir", sweep_dir, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for line in ("#SBATCH --ntasks-per-node=1", "#SBATCH --cpus-per-task=1", "#SBATCH --signal=USR1@120",
                 "#SBATCH --requeue", "#SBATCH --open-mode=append",
                 f"#SBATCH --output={sweep_dir.resolve()}/logs/%A_%a.out",
                 f"srun {sys.executable} -m vitbench sweep run-task {sweep_dir.resolve()} "
                 '--group "$GROUP" --array-index "$SLURM_ARRAY_TASK_ID"'):
        assert line in out, out
    cmds = [ln for ln in out.splitlines() if ln.startswith("sbatch ")]
    assert cmds == [
        f"sbatch --parsable --array=0-1%4 {sweep_dir.resolve()}/sweep.sbatch main",
        f"sbatch --parsable --array=0-1%4 '--dependency=aftercorr:<main-job-id>' --kill-on-invalid-dep=yes "
        f"{sweep_dir.resolve()}/sweep.sbatch deit_kd",
    ]
    assert not sweep_dir.exists()


# --------------------------------------------------------------------- packing

def packed_experiment(tmp_path: Path, k=2, **changes) -> Path:
    """resnet and vit at 3 sizes (6 main tasks), deit distilled from resnet (3 students), k runs per device."""
    changes = {"resources": {"accelerator": "cpu", "runs_per_device": k}, **changes}
    return tiny_experiment(tmp_path, samples_per_class=[10, 20, 30], backbones=[
        {"name": "resnet"}, {"name": "vit"}, {"name": "deit", "label": "deit_kd", "teacher": "resnet"}], **changes)


def test_packing_puts_k_tasks_per_element_and_students_at_their_teachers_slots(tmp_path, cli):
    sweep_dir = tmp_path / "sweep"
    proc = cli("sweep", "plan", packed_experiment(tmp_path), "--sweep-dir", sweep_dir)
    assert proc.returncode == 0, proc.stderr
    assert ("packed: 9 tasks in 5 array elements of up to 2 (runs_per_device 2; main 6 in 3; "
            "deit_kd 3 in 2, element i after main element i)") in proc.stdout
    assert "pack.slot" in proc.stdout
    tasks = json.loads((sweep_dir / "sweep.json").read_text())["tasks"]
    main = [t for t in tasks if t["group"] == "main"]
    assert [(t["array_index"], t["slot"]) for t in main] == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]
    students = [t for t in tasks if t["group"] == "deit_kd"]
    assert len(students) == 3
    for s in students:  # student pack i holds exactly the students of main pack i's teachers
        teacher = tasks[s["teacher"]]
        assert (s["array_index"], s["slot"]) == (teacher["array_index"], teacher["slot"])
    assert [(t["array_index"], t["slot"]) for t in students] == [(0, 0), (0, 1), (1, 0)]
    places = [(t["group"], t["array_index"], t["slot"]) for t in tasks]
    assert len(set(places)) == len(places)

    # unpacked, the plan is the one it always was: array index = task id (main) or the teacher's id
    proc = cli("sweep", "plan", packed_experiment(tmp_path, k=1, name="flat"), "--sweep-dir", tmp_path / "flat",
               "--json")
    flat = json.loads(proc.stdout)["tasks"]
    assert [(t["array_index"], t["slot"]) for t in flat] == [(i, 0) for i in range(6)] + [(0, 0), (1, 0), (2, 0)]


def test_run_task_of_an_empty_slot_does_nothing(tmp_path, cli):
    sweep_dir = tmp_path / "sweep"
    assert cli("sweep", "plan", packed_experiment(tmp_path), "--sweep-dir", sweep_dir).returncode == 0
    before = sorted(p.relative_to(sweep_dir) for p in sweep_dir.rglob("*"))
    proc = cli("sweep", "run-task", sweep_dir, "--group", "deit_kd", "--array-index", 1, "--slot", 1)
    assert proc.returncode == 0 and "deit_kd pack 1 slot 1: no task" in proc.stdout, proc.stdout + proc.stderr
    assert sorted(p.relative_to(sweep_dir) for p in sweep_dir.rglob("*")) == before
    assert_user_error(cli("sweep", "run-task", sweep_dir, "--group", "deit_kd", "--array-index", 2),
                      "no task in group 'deit_kd' at array index 2")


def test_packed_dry_run_shows_the_packing_and_the_step_loop(tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sweep_dir = tmp_path / "sweep"
    proc = cli("sweep", "submit", packed_experiment(tmp_path), "--profile", "local", "--sweep-dir", sweep_dir,
               "--dry-run")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for line in ("one array task = a pack of up to 2 training runs", "#SBATCH --signal=B:USR1@120", "#SBATCH --requeue",
                 "#SBATCH --ntasks-per-node=1", "RUNS=2", "export VITBENCH_REQUEUE=batch", "trap on_usr1 USR1",
                 'scancel --signal=USR1 "$SLURM_JOB_ID"', 'scontrol requeue "$ELEMENT"',
                 "for ((slot = 0; slot < RUNS && !requeue; slot++)); do",
                 "srun --overlap --ntasks=1 --open-mode=append",
                 f'{sys.executable} -m vitbench sweep run-task "$SWEEP_DIR" --group "$GROUP" '
                 '--array-index "$SLURM_ARRAY_TASK_ID" --slot "$slot" &',
                 "# packed: 9 tasks in 5 array elements of up to 2"):
        assert line in out, (line, out)
    assert "#SBATCH --signal=USR1@120" not in out and "nvidia-cuda-mps-control" not in out  # CPU profile: no MPS
    cmds = [ln for ln in out.splitlines() if ln.startswith("sbatch ")]
    assert cmds == [
        f"sbatch --parsable --array=0-2%4 {sweep_dir.resolve()}/sweep.sbatch main",
        f"sbatch --parsable --array=0-1%4 '--dependency=aftercorr:<main-job-id>' --kill-on-invalid-dep=yes "
        f"{sweep_dir.resolve()}/sweep.sbatch deit_kd",
    ]
    assert not sweep_dir.exists()


@pytest.mark.parametrize("k", [1, 2])
def test_mps_profile_starts_and_stops_a_per_job_daemon_only_for_packed_gpu_jobs(tmp_path, cli, monkeypatch, k):
    monkeypatch.chdir(tmp_path)
    profile = tmp_path / "gpu.yaml"
    profile.write_text("name: gpu\ngpus_per_node: 4\ngres: 'gpu:{gpus}'\ncpus_per_task: 8\nmps: true\n")
    exp = packed_experiment(tmp_path, k=k, resources={"accelerator": "gpu", "runs_per_device": k})
    proc = cli("sweep", "submit", exp, "--profile", profile, "--sweep-dir", tmp_path / "sweep", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "#SBATCH --gres=gpu:1" in out
    mps = ('export CUDA_MPS_PIPE_DIRECTORY="$MPS_DIR/pipe" CUDA_MPS_LOG_DIRECTORY="$MPS_DIR/log"',
           "nvidia-cuda-mps-control -d", "echo quit | nvidia-cuda-mps-control")
    assert all((m in out) == (k > 1) for m in mps), out


def test_a_student_pack_is_submitted_once_with_one_dependency(tmp_path, cli):
    """On resume, a student pack whose teachers are partly done and partly resubmitted runs once, after them."""
    from vitbench.sweep.slurm import plan_submissions, teacher_jobs
    from vitbench.sweep.sweepdir import TaskState, load_sweep

    sweep_dir = tmp_path / "sweep"
    assert cli("sweep", "plan", packed_experiment(tmp_path), "--sweep-dir", sweep_dir).returncode == 0
    tasks = load_sweep(sweep_dir).tasks
    # students 6 (teacher 0, done) and 7 (teacher 1, resubmitted) share pack 0; 8 (teacher 2, queued in job 41)
    states = {0: TaskState(tasks[0], "done", "40_0"), 2: TaskState(tasks[2], "pending", "41_1")}
    where = teacher_jobs(tasks, [1, 6, 7, 8], states)
    assert where == {0: None, 1: "main", 2: "41"}
    subs = plan_submissions(tasks, [1, 6, 7, 8], where)
    assert [(s.group, s.tasks, s.indices, s.dependency) for s in subs] == [
        ("main", [1], [0], None), ("deit_kd", [6, 7], [0, 0], "main"), ("deit_kd", [8], [1], "41")]


def test_a_training_set_size_has_one_spelling_and_order():
    from vitbench.sweep import TrainSize

    small, large, spc = TrainSize(fraction=0.02), TrainSize(fraction=0.1), TrainSize(samples_per_class=25)
    assert [s.tag for s in (small, large, spc)] == ["f0.02", "f0.1", "spc25"]  # run dirs, task and W&B names
    assert [str(s) for s in (small, large, spc)] == ["f=0.02", "f=0.1", "25/class"]  # tables
    assert sorted([spc, large, small]) == [small, large, spc]
    assert TrainSize.of_run(0.5, 25) == spc and TrainSize.of_run(None, None) == TrainSize(fraction=1.0)
    with pytest.raises(ValueError):
        TrainSize(fraction=0.1, samples_per_class=25)


# ------------------------------------------------------------------- bad input

def _write(tmp_path, text):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    return p


BAD_EXPERIMENTS = {
    "teacherless distillation": ({"backbones": [{"name": "resnet"}, {"name": "deit", "distillation": "hard"}]},
                                 "no teacher"),
    "unknown teacher": ({"backbones": [{"name": "resnet"}, {"name": "deit", "teacher": "resnt"}]},
                        "did you mean 'resnet'"),
    "unknown backbone": ({"backbones": [{"name": "vitt"}]}, "unknown backbone 'vitt'"),
    "empty fractions": ({"samples_per_class": None, "fractions": []}, "non-empty list"),
    "zero fraction": ({"samples_per_class": None, "fractions": [0.0, 0.5]}, "fractions must be in (0, 1]"),
    "fraction above 1": ({"samples_per_class": None, "fractions": [1.5]}, "fractions must be in (0, 1]"),
    "fraction not a number": ({"samples_per_class": None, "fractions": ["half"]}, "not a number"),
    "unknown key": ({"seed": [0]}, "did you mean 'seeds'"),
    "unknown train key": ({"train": {"optim": {"learning_rate": 0.1}}}, "unknown config key 'optim.learning_rate'"),
    "sweep-owned train key": ({"train": {"seed": 3}}, "set by the sweep"),
    "duplicate label": ({"backbones": [{"name": "resnet"}, {"name": "resnet"}]}, "used twice"),
    "colliding fractions": ({"samples_per_class": None, "fractions": [0.1234561, 0.1234564]}, "same run dirs"),
    "sweep-owned label": ({"train": {"label": "x"}}, "set by the sweep"),
    "zero runs_per_device": ({"resources": {"accelerator": "cpu", "runs_per_device": 0}},
                             "runs_per_device must be >= 1"),
    "packed multi-device runs": ({"resources": {"accelerator": "cpu", "devices": 2, "runs_per_device": 2}},
                                 "packs single-device runs"),
    "unknown key in a family's train": ({"backbones": [{"name": "resnet", "train": {"optim": {"lrr": 0.1}}}]},
                                        "backbones[0].train: unknown config key 'optim.lrr'"),
    "sweep-owned key in a family's train": ({"backbones": [{"name": "resnet", "train": {"budget": {"max_steps": 5}}}]},
                                            "backbones[0].train.budget is set by the sweep"),
    "bad family budget": ({"backbones": [{"name": "resnet", "budget": {"max_step": 5}}]}, "did you mean 'max_steps'"),
    "sweep-owned W&B name": ({"train": {"wandb": {"name": "x"}}},
                             "train.wandb.name is set by the sweep from the task identity"),
}


@pytest.mark.parametrize("case,command", [(c, "plan") for c in BAD_EXPERIMENTS] + [
    ("teacherless distillation", "run"), ("zero fraction", "run"), ("unknown backbone", "submit"),
    ("unknown teacher", "submit"), ("zero runs_per_device", "run"), ("packed multi-device runs", "submit")])
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

@pytest.mark.slow
def test_local_run_trains_every_task_then_skips_them(tmp_path, cli, tiny_fashion_mnist):
    exp = tiny_experiment(tmp_path, dataset=tiny_fashion_mnist)
    sweep_dir = tmp_path / "sweep"
    t0 = time.monotonic()
    proc = cli("sweep", "run", exp, "--sweep-dir", sweep_dir, "--parallel", "1")
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
    # a student starts as soon as its teacher has finished, before the next teacher; never before its own
    starts = [line.split(" start ")[1].split()[0] for line in out.splitlines() if " start " in line]
    assert starts == ["resnet/spc10-s0", "deit_kd/spc10-s0", "resnet/spc20-s0", "deit_kd/spc20-s0"]
    for t in tasks[2:]:
        teacher_done = Path(tasks[t["teacher"]]["run_dir"], "results.json").stat().st_mtime
        assert Path(t["run_dir"], "config.yaml").stat().st_mtime >= teacher_done

    status = json.loads(cli("sweep", "status", sweep_dir, "--json").stdout)
    assert [s["state"] for s in status] == ["done"] * 4
    assert set(status[0]) == {"task", "label", "fraction", "samples_per_class", "seed", "state", "converged",
                              "run_dir", "job"}
    # Even a one-epoch run validates 4 times (what the convergence check needs), and status reports
    # the verdict the run recorded: done* and a line naming the tasks still improving at their end.
    from vitbench.training.convergence import verdict

    assert all(len(r["val_history"]) == r["validations"] >= 4 for r in results.values())
    expected = [verdict(results[t["name"]]["val_history"], results[t["name"]]["steps"])["converged"] for t in tasks]
    assert [s["converged"] for s in status] == expected == [results[t["name"]]["converged"] for t in tasks]
    text = cli("sweep", "status", sweep_dir).stdout
    unconverged = [t["id"] for t, ok in zip(tasks, expected) if not ok]
    assert text.count("done*") == len(unconverged)
    if unconverged:
        assert f"* not converged: {len(unconverged)} of 4 done runs" in text and "larger budget: tasks " in text
    else:
        assert "not converged" not in text

    mtimes = {t["name"]: Path(t["run_dir"], "results.json").stat().st_mtime_ns for t in tasks}
    t0 = time.monotonic()
    again = cli("sweep", "run", exp, "--sweep-dir", sweep_dir)
    assert again.returncode == 0, again.stderr
    assert "4 task(s) already done" in again.stdout and " start " not in again.stdout
    assert time.monotonic() - t0 < first
    assert {t["name"]: Path(t["run_dir"], "results.json").stat().st_mtime_ns for t in tasks} == mtimes
    resume = cli("sweep", "resume", sweep_dir)
    assert resume.returncode == 0 and "nothing to resume" in resume.stdout


@pytest.mark.slow
def test_local_failure_is_reported_and_resume_reruns_only_it(tmp_path, cli, tiny_fashion_mnist):
    """A task that fails does not stop the others, and its student never starts; the exit status says
    so; resume reruns the two, teacher first."""
    exp = tiny_experiment(tmp_path, dataset=tiny_fashion_mnist)
    sweep_dir = tmp_path / "sweep"
    assert cli("sweep", "plan", exp, "--sweep-dir", sweep_dir).returncode == 0
    tasks = json.loads((sweep_dir / "sweep.json").read_text())["tasks"]
    assert [t["name"] for t in tasks] == ["resnet/spc10-s0", "resnet/spc20-s0", "deit_kd/spc10-s0", "deit_kd/spc20-s0"]
    # Make task 1 fail: its run dir holds something that is not a vitbench run.
    blocker = Path(tasks[1]["run_dir"])
    blocker.mkdir(parents=True)
    (blocker / "stray.txt").write_text("x")
    proc = cli("sweep", "run", exp, "--sweep-dir", sweep_dir)
    assert proc.returncode == 1
    assert "FAILED resnet/spc20-s0" in proc.stdout and "[4/4]" in proc.stdout
    assert "FAILED deit_kd/spc20-s0: its teacher resnet/spc20-s0 did not finish" in proc.stdout
    assert not Path(tasks[3]["run_dir"]).exists() and "start deit_kd/spc20-s0" not in proc.stdout
    assert Path(tasks[0]["run_dir"], "results.json").is_file() and Path(tasks[2]["run_dir"], "results.json").is_file()
    states = [s["state"] for s in json.loads(cli("sweep", "status", sweep_dir, "--json").stdout)]
    assert states == ["done", "failed", "done", "not started"]

    (blocker / "stray.txt").unlink()
    done_mtime = Path(tasks[0]["run_dir"], "results.json").stat().st_mtime_ns
    proc = cli("sweep", "resume", sweep_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "resuming 2 task(s): resnet/spc20-s0, deit_kd/spc20-s0" in proc.stdout
    assert proc.stdout.count(" start ") == 2
    assert all(Path(t["run_dir"], "results.json").is_file() for t in tasks)
    assert Path(tasks[0]["run_dir"], "results.json").stat().st_mtime_ns == done_mtime


@pytest.mark.slow
def test_local_packed_run_runs_each_slots_tasks_at_once(tmp_path, cli, tiny_fashion_mnist):
    """local.parallel 1 x runs_per_device 2: the two teachers train side by side, then the two students."""
    exp = tiny_experiment(tmp_path, dataset=tiny_fashion_mnist, local={"parallel": 1},
                          resources={"accelerator": "cpu", "runs_per_device": 2})
    sweep_dir = tmp_path / "sweep"
    proc = cli("sweep", "run", exp, "--sweep-dir", sweep_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 slot(s) x runs_per_device 2: up to 2 tasks at a time" in proc.stdout
    assert "[4/4] done" in proc.stdout
    tasks = json.loads((sweep_dir / "sweep.json").read_text())["tasks"]
    assert all(Path(t["run_dir"], "results.json").is_file() for t in tasks)
    # the runner's own launch and finish lines, in order (not the runs' first writes: a tiny run can
    # finish within the other's start-up): both teachers launched before either finished; each student
    # launched after its own teacher finished
    lines = proc.stdout.splitlines()

    def at(event: str, name: str) -> int:
        i = next((i for i, ln in enumerate(lines) if re.match(rf"\[\d+/4\] {event}\s+{re.escape(name)} ", ln)), None)
        assert i is not None, f"no '{event} {name}' line:\n{proc.stdout}"
        return i

    assert max(at("start", "resnet/spc10-s0"), at("start", "resnet/spc20-s0")) < min(
        at("done", "resnet/spc10-s0"), at("done", "resnet/spc20-s0")), proc.stdout
    for t in tasks[2:]:
        assert at("start", t["name"]) > at("done", tasks[t["teacher"]]["name"]), proc.stdout

