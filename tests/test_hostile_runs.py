"""Run and sweep dirs from someone else, or damaged: a checkpoint never runs code, and every bad file
is a one-line error (exit 2, no traceback) that writes nothing and loses nothing.

On a shared cluster people pass each other run dirs (``--teacher RUN_DIR``, ``vitbench analyze
RUN_DIR``) and sweep dirs. Each family below starts from one real finished micro run (or a real
planned sweep), damages a copy of it one way per case, runs the real CLI (in this process where
nothing but the command's own output matters, else in a new one), and compares the whole tree
before and after.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from vitbench.cli import main

UMASK = 0o022


def vitbench(*args, env=None, timeout=600):
    """The real CLI in a new interpreter, with a known umask."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", **(env or {})}
    return subprocess.run([sys.executable, "-m", "vitbench", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout, umask=UMASK)


# The warnings Python shows a user by default; the others it hides unless asked (-W, PYTHONWARNINGS).
HIDDEN_WARNINGS = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)


def vitbench_here(capsys, *args) -> tuple[int, str]:
    """The real CLI in this process (no interpreter start-up): (exit status, stderr). A warning raised
    meanwhile (torch's, while a checkpoint loads) is on that stderr, as a user would see it: pytest
    would otherwise collect it out of sight, and Python shows each only once per process."""
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc = main([str(a) for a in args])
    shown = "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno)
                    for w in caught if not issubclass(w.category, HIDDEN_WARNINGS))
    return rc, capsys.readouterr().err + shown


def assert_one_line_error(returncode: int, stderr: str, *words: str) -> None:
    assert returncode == 2, stderr[-3000:]
    err = stderr.strip()
    assert err.startswith("vitbench: error:") and "\n" not in err and "Traceback" not in err, err
    for w in words:
        assert w in err, err


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` (hidden ones too) with its bytes: what 'nothing written or lost' compares."""
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, tiny_fashion_mnist):
    """One real finished ResNet-micro run (1 epoch on the tiny Fashion-MNIST), with its own data cache."""
    root = tmp_path_factory.mktemp("hostile")
    out, cache = root / "resnet", root / "cache"
    r = vitbench("train", "--backbone", "resnet", "--preset", "micro", "--dataset", tiny_fashion_mnist,
                 "--max-epochs", "1", "--batch-size", "64", "--out", out, "--wandb", "disabled",
                 env={"VITBENCH_CACHE": str(cache)})
    assert r.returncode == 0, r.stderr[-3000:]
    return {"run": out, "cache": cache, "data": tiny_fashion_mnist}


# ------------------------------------------------------------------ damage, one way per case

class Evil:
    """Unpickling this runs a shell command: what a hostile best.ckpt carries."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _edit_yaml(path: Path, edit) -> None:
    data = yaml.safe_load(path.read_text())
    edit(data)
    path.write_text(yaml.safe_dump(data))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _evil_plugin(run: Path, marker: Path) -> None:
    plugin = run.parent / "evil_plugin.py"
    plugin.write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n")
    _edit_yaml(run / "config.yaml", lambda c: c.__setitem__("plugins", [str(plugin)]))


# name -> (damage(run_dir, marker), words the error must contain).
RUN_DAMAGE = {
    "pickle that runs code in best.ckpt": (
        lambda run, m: torch.save({"state_dict": {}, "hparams": Evil(m)}, run / "checkpoints" / "best.ckpt"),
        ["best.ckpt", "not a weights-only checkpoint", "GLOBAL posix.system", "could run code"]),
    "plain pickle as best.ckpt": (
        lambda run, m: (run / "checkpoints" / "best.ckpt").write_bytes(pickle.dumps({"x": Evil(m)}, protocol=4)),
        ["best.ckpt", "not a readable checkpoint (UnpicklingError"]),
    "truncated best.ckpt": (lambda run, m: _truncate(run / "checkpoints" / "best.ckpt"),
                            ["best.ckpt", "not a readable checkpoint", "truncated"]),
    "best.ckpt of text": (lambda run, m: (run / "checkpoints" / "best.ckpt").write_text("not a checkpoint\n"),
                          ["best.ckpt", "not a readable checkpoint"]),
    "empty best.ckpt": (lambda run, m: (run / "checkpoints" / "best.ckpt").write_bytes(b""),
                        ["best.ckpt", "not a readable checkpoint"]),
    "best.ckpt holding a list": (lambda run, m: torch.save([1, 2], run / "checkpoints" / "best.ckpt"),
                                 ["best.ckpt", "holds a list, not a checkpoint dict"]),
    "best.ckpt entry that is not a tensor": (
        lambda run, m: torch.save({"state_dict": {"model.conv1.weight": 3}}, run / "checkpoints" / "best.ckpt"),
        ["best.ckpt", "'conv1.weight' is not a tensor"]),
    "no best.ckpt": (lambda run, m: (run / "checkpoints" / "best.ckpt").unlink(), ["no checkpoints/best.ckpt"]),
    "weights of another backbone": (
        lambda run, m: _edit_json(run / "results.json", lambda r: r.__setitem__("backbone", "vit")), ["does not"]),
    "corrupt results.json": (lambda run, m: _truncate(run / "results.json"), ["results.json is corrupt (line"]),
    "results.json without backbone": (
        lambda run, m: _edit_json(run / "results.json", lambda r: r.pop("backbone")), ["results.json lacks backbone"]),
    "results.json with a text image size": (
        lambda run, m: _edit_json(run / "results.json", lambda r: r.__setitem__("image_size", "28")),
        ["'image_size' is \"28\", not an integer >= 1"]),
    "results.json holding a list": (lambda run, m: (run / "results.json").write_text("[1, 2]\n"),
                                    ["results.json is not a vitbench results file"]),
    "config.yaml not YAML": (lambda run, m: (run / "config.yaml").write_text("model: [unclosed\n"),
                             ["config.yaml is not valid YAML"]),
    "config.yaml with a misspelt key": (
        lambda run, m: _edit_yaml(run / "config.yaml", lambda c: c["model"].__setitem__("presett", "micro")),
        ["config.yaml", "unknown config key 'model.presett'"]),
    "no config.yaml": (lambda run, m: (run / "config.yaml").unlink(), ["has results.json but no config.yaml"]),
    "plugin named only by the run": (_evil_plugin, ["evil_plugin.py", "only when you name it", "--plugin"]),
}


def _damaged_copy(finished_run: dict, tmp_path: Path, case: str) -> tuple[Path, Path]:
    run = tmp_path / "run"
    shutil.copytree(finished_run["run"], run)
    marker = tmp_path / "PWNED"
    damage, _ = RUN_DAMAGE[case]
    damage(run, marker)
    assert not marker.exists()
    return run, marker


# ------------------------------------------------------------------ train --teacher RUN_DIR



@pytest.mark.parametrize("case", list(RUN_DAMAGE))
def test_train_with_a_damaged_or_hostile_teacher_run(case, finished_run, tmp_path, capsys):
    teacher, marker = _damaged_copy(finished_run, tmp_path, case)
    before = tree(tmp_path)
    out = tmp_path / "student"
    rc, err = vitbench_here(capsys, "train", "--backbone", "deit", "--preset", "micro", "--dataset",
                            finished_run["data"], "--max-epochs", "1", "--teacher", teacher, "--out", out,
                            "--wandb", "disabled")
    assert_one_line_error(rc, err, *RUN_DAMAGE[case][1])
    assert not marker.exists(), "loading the teacher ran code"
    assert tree(tmp_path) == before and not out.exists()


def test_teacher_checkpoint_that_runs_code_is_refused(finished_run, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    ckpt = tmp_path / "teacher.ckpt"
    torch.save({"state_dict": {}, "x": Evil(marker)}, ckpt)
    before = tree(tmp_path)
    rc, err = vitbench_here(capsys, "train", "--backbone", "deit", "--dataset", finished_run["data"], "--max-epochs",
                            "1", "--teacher-backbone", "resnet", "--teacher-checkpoint", ckpt, "--out",
                            tmp_path / "student", "--wandb", "disabled")
    assert_one_line_error(rc, err, "teacher.ckpt", "not a weights-only checkpoint")
    assert not marker.exists() and tree(tmp_path) == before


@pytest.mark.slow
def test_real_teacher_distils_and_the_student_checkpoint_holds_only_the_student(finished_run, tmp_path):
    args = ["train", "--backbone", "deit", "--preset", "micro", "--dataset", finished_run["data"],
            "--max-epochs", "1", "--batch-size", "64", "--teacher", finished_run["run"], "--out", tmp_path / "student",
            "--wandb", "disabled"]
    r = vitbench(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path / "student"
    first = json.loads((out / "results.json").read_text())
    assert first["teacher"] == str(finished_run["run"].resolve())
    for name in ("best.ckpt", "last.ckpt"):
        state = torch.load(out / "checkpoints" / name, map_location="cpu", weights_only=True)["state_dict"]
        assert not [k for k in state if k.startswith("distill_loss.")], f"{name} holds the teacher's weights"
        assert any(k.startswith("model.") for k in state)
    # An interrupted distilled run resumes from last.ckpt and tests its best.ckpt: both load without the teacher's keys.
    (out / "results.json").unlink()
    r = vitbench(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    again = json.loads((out / "results.json").read_text())
    assert again["steps"] == first["steps"] and again["test_acc"] == pytest.approx(first["test_acc"])


# ------------------------------------------------------------------ analyze attention / posembed RUN_DIR

@pytest.mark.parametrize("case", list(RUN_DAMAGE))
def test_analyze_a_damaged_or_hostile_run(case, finished_run, tmp_path, capsys):
    run, marker = _damaged_copy(finished_run, tmp_path, case)
    before = tree(tmp_path)
    rc, err = vitbench_here(capsys, "analyze", "attention", run, "--images", "2", "--wandb", "disabled")
    assert_one_line_error(rc, err, *RUN_DAMAGE[case][1])
    assert not marker.exists(), "loading the run ran code"
    assert tree(tmp_path) == before


def test_posembed_of_a_hostile_checkpoint_is_refused(finished_run, tmp_path, capsys):
    run, marker = _damaged_copy(finished_run, tmp_path, "pickle that runs code in best.ckpt")
    before = tree(tmp_path)
    rc, err = vitbench_here(capsys, "analyze", "posembed", run, "--wandb", "disabled")
    assert_one_line_error(rc, err, "not a weights-only checkpoint")
    assert not marker.exists() and tree(tmp_path) == before


def test_a_run_trained_with_a_plugin_is_analysed_when_the_user_names_it(finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run["run"], run)
    plugin = Path(__file__).parent / "plugins" / "tiny_mlp.py"  # registers a backbone; the run's resnet needs none
    _edit_yaml(run / "config.yaml", lambda c: c.__setitem__("plugins", [str(plugin)]))
    r = vitbench("analyze", "attention", run, "--images", "2", "--wandb", "disabled", "--plugin", plugin)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (run / "analysis" / "attention.png").is_file()


# ------------------------------------------------------------------ vitbench report

def _report_dir(finished_run: dict, tmp_path: Path) -> Path:
    """A folder of two finished runs (the report's plain-folder mode)."""
    root = tmp_path / "sweep"
    for name in ("a", "b"):
        shutil.copytree(finished_run["run"], root / "runs" / name)
    _edit_json(root / "runs" / "b" / "results.json", lambda r: r.__setitem__("seed", 1))
    return root


REPORT_DAMAGE = {
    "results.json without n_train": (lambda r: r.pop("n_train"), ["lacks n_train"]),
    "test_acc as text": (lambda r: r.__setitem__("test_acc", "0.9"), ["'test_acc' is \"0.9\", not a number in [0, 1]"]),
    "test_acc above 1": (lambda r: r.__setitem__("test_acc", 91.0), ["'test_acc' is 91.0"]),
    "test_acc NaN": (lambda r: r.__setitem__("test_acc", float("nan")), ["'test_acc' is NaN"]),
    "n_train zero": (lambda r: r.__setitem__("n_train", 0), ["'n_train' is 0, not an integer >= 1"]),
    "class_names not strings": (lambda r: r.__setitem__("class_names", [1, 2]), ["'class_names'"]),
}


@pytest.mark.parametrize("case", list(REPORT_DAMAGE) + ["truncated results.json", "sweep.json task with a text seed",
                                                       "sweep.json run without backbone"])
def test_report_checks_every_input_before_writing(case, finished_run, planned_sweep, tmp_path, capsys):
    root = _report_dir(finished_run, tmp_path)
    results = root / "runs" / "b" / "results.json"
    words: list[str] = [str(results)]
    if case in REPORT_DAMAGE:
        edit, words = REPORT_DAMAGE[case]
        _edit_json(results, edit)
        words = [str(results), *words]
    elif case == "truncated results.json":
        _truncate(results)
    else:  # a planned sweep whose first two tasks ran
        text = (planned_sweep / "sweep.json").read_text().replace(str(planned_sweep.resolve()), str(root.resolve()))
        (root / "sweep.json").write_text(text)
        tasks = json.loads(text)["tasks"]
        for task, name in zip(tasks, ("a", "b")):
            shutil.copytree(root / "runs" / name, task["run_dir"])
        results = Path(tasks[1]["run_dir"]) / "results.json"
        if case == "sweep.json task with a text seed":
            _edit_json(root / "sweep.json", lambda sweep: sweep["tasks"][1].__setitem__("seed", "one"))
            words = ["sweep.json is not a sweep file vitbench wrote (task 1: 'seed' is \"one\""]
        else:
            _edit_json(results, lambda r: r.pop("backbone"))
            words = [str(results), "lacks backbone"]
    before = tree(tmp_path)
    rc, err = vitbench_here(capsys, "report", root)
    assert_one_line_error(rc, err, *words)
    assert tree(tmp_path) == before and not (root / "report").exists()


# ------------------------------------------------------------------ sweep status / resume

@pytest.fixture(scope="session")
def planned_sweep(tmp_path_factory, tiny_fashion_mnist):
    """A real planned sweep (resnet, and deit distilled from it; 2 sizes), run locally once: a jobs.json."""
    root = tmp_path_factory.mktemp("sweep")
    exp = root / "tiny.yaml"
    exp.write_text(yaml.safe_dump({
        "name": "tiny", "dataset": tiny_fashion_mnist, "samples_per_class": [5, 10], "seeds": [0],
        "budget": {"max_epochs": 1},
        "backbones": [{"name": "resnet"},
                      {"name": "deit", "label": "deit_kd", "teacher": "resnet", "distillation": "hard"}],
        "resources": {"accelerator": "cpu"}, "wandb": {"mode": "disabled"},
    }))
    sweep = root / "sweep"
    assert main(["sweep", "plan", str(exp), "--sweep-dir", str(sweep)]) == 0
    (sweep / "jobs.json").write_text(json.dumps({"mode": "local", "submissions": []}))
    return sweep


def _task_edit(index: int, edit):
    def damage(sweep: Path) -> None:
        _edit_json(sweep / "sweep.json", lambda s: edit(s["tasks"][index], s))
    return damage


def _move_run_dir(new: str):
    def edit(task, sweep):
        task["run_dir"] = task["config"]["out"] = new
    return edit


SWEEP_DAMAGE = {
    "truncated sweep.json": (lambda s: _truncate(s / "sweep.json"), ["sweep.json is corrupt"]),
    "binary sweep.json": (lambda s: (s / "sweep.json").write_bytes(bytes(range(256))), ["sweep.json"]),
    "sweep.json holding a list": (lambda s: (s / "sweep.json").write_text("[]"), ["needs a 'name' and a 'tasks' list"]),
    "task that is not an object": (lambda s: _edit_json(s / "sweep.json", lambda d: d["tasks"].__setitem__(1, 7)),
                                   ["task 1 is a int"]),
    "duplicate task id": (_task_edit(1, lambda t, s: t.__setitem__("id", 0)), ["duplicate task id 0"]),
    "run dir outside the sweep": (_task_edit(0, lambda t, s: _move_run_dir("/tmp/elsewhere/run")(t, s)),
                                  ["run dir /tmp/elsewhere/run is outside the sweep dir"]),
    "run dir escaping with ..": (
        _task_edit(0, lambda t, s: _move_run_dir(s["sweep_dir"] + "/runs/../../escaped")(t, s)),
        ["is outside the sweep dir"],
    ),
    "relative run dir": (_task_edit(0, lambda t, s: _move_run_dir("runs/x")(t, s)), ["not an absolute path"]),
    "two tasks, one run dir": (_task_edit(1, lambda t, s: _move_run_dir(s["tasks"][0]["run_dir"])(t, s)),
                               ["tasks 0 and 1 share the run dir"]),
    "config.out elsewhere": (_task_edit(0, lambda t, s: t["config"].__setitem__("out", "/tmp/elsewhere")),
                             ["config.out is not its run dir"]),
    "teacher that is not an earlier task": (_task_edit(2, lambda t, s: t.__setitem__("teacher", 3)),
                                            ["teacher 3 is not an earlier task's id"]),
    "seed as text": (_task_edit(0, lambda t, s: t.__setitem__("seed", "zero")), ["'seed' is \"zero\""]),
    "task without a name": (_task_edit(0, lambda t, s: t.pop("name")), ["'name' is missing"]),
    "corrupt jobs.json": (lambda s: (s / "jobs.json").write_text('{"mode": "local", "subm'), ["jobs.json is corrupt"]),
    "jobs.json of another shape": (lambda s: (s / "jobs.json").write_text('{"mode": "cloud"}'),
                                   ["jobs.json is not a jobs file vitbench wrote"]),
}


@pytest.mark.parametrize("command", ["status", "resume"])
@pytest.mark.parametrize("case", list(SWEEP_DAMAGE))
def test_sweep_status_and_resume_refuse_a_damaged_sweep_dir(case, command, planned_sweep, tmp_path, capsys):
    sweep = tmp_path / "sweep"
    shutil.copytree(planned_sweep, sweep)
    # the copy's run dirs must lie in the copy, as the planner would have written them
    text = (sweep / "sweep.json").read_text().replace(str(planned_sweep.resolve()), str(sweep.resolve()))
    (sweep / "sweep.json").write_text(text)
    damage, words = SWEEP_DAMAGE[case]
    damage(sweep)
    before = tree(tmp_path)
    capsys.readouterr()
    rc = main(["sweep", command, str(sweep)])
    out, err = capsys.readouterr()
    assert_one_line_error(rc, err, *words)
    assert out == "" and tree(tmp_path) == before


def test_resume_refuses_a_corrupt_experiment_file(planned_sweep, tmp_path, capsys):
    sweep = tmp_path / "sweep"
    shutil.copytree(planned_sweep, sweep)
    text = (sweep / "sweep.json").read_text().replace(str(planned_sweep.resolve()), str(sweep.resolve()))
    (sweep / "sweep.json").write_text(text)
    (sweep / "experiment.yaml").write_text("name: [tiny\n")
    before = tree(tmp_path)
    capsys.readouterr()
    rc = main(["sweep", "resume", str(sweep)])
    out, err = capsys.readouterr()
    assert_one_line_error(rc, err, "experiment.yaml")
    assert out == "" and tree(tmp_path) == before


@pytest.mark.parametrize("damage", ["truncated", "without test_acc", "device not a string"])
def test_a_run_whose_results_json_does_not_read_is_corrupt_not_done(damage, planned_sweep, finished_run, tmp_path,
                                                                    capsys):
    sweep = tmp_path / "sweep"
    shutil.copytree(planned_sweep, sweep)
    text = (sweep / "sweep.json").read_text().replace(str(planned_sweep.resolve()), str(sweep.resolve()))
    (sweep / "sweep.json").write_text(text)
    tasks = json.loads(text)["tasks"]
    results = Path(tasks[0]["run_dir"]) / "results.json"
    results.parent.mkdir(parents=True)
    shutil.copy(finished_run["run"] / "results.json", results)
    if damage == "truncated":
        _truncate(results)
    elif damage == "device not a string":  # the report groups runs by it
        _edit_json(results, lambda r: r.update(device=["cpu"]))
    else:
        _edit_json(results, lambda r: r.pop("test_acc"))
    before = tree(tmp_path)

    capsys.readouterr()
    assert main(["sweep", "status", str(sweep), "--json"]) == 0
    states = {row["task"]: row["state"] for row in json.loads(capsys.readouterr().out)}
    assert states[0] == "corrupt" and "done" not in states.values()
    assert main(["sweep", "status", str(sweep)]) == 0
    out = capsys.readouterr().out
    assert "corrupt: 1" in out and str(results) in out and "delete it" in out

    rc = main(["sweep", "resume", str(sweep)])
    out, err = capsys.readouterr()
    assert_one_line_error(rc, err, str(results), "does not read", "delete it")
    assert out == "" and tree(tmp_path) == before


# ------------------------------------------------------------------ files with the user's umask

@pytest.mark.parametrize("umask,expected", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_atomic_writes_get_the_mode_a_plain_open_gives(umask, expected, tmp_path):
    from vitbench.utils import write_text

    old = os.umask(umask)
    try:
        write_text(tmp_path / "new.txt", "x\n")
        write_text(tmp_path / "new.txt", "y\n")  # replacing keeps it so
        with open(tmp_path / "plain.txt", "w") as f:
            f.write("x\n")
    finally:
        os.umask(old)
    assert mode(tmp_path / "new.txt") == mode(tmp_path / "plain.txt") == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.txt", "plain.txt"]  # no temporary left behind


def test_run_files_report_and_cache_are_shared_like_plain_files(finished_run, tmp_path):
    run = finished_run["run"]
    assert mode(run / "config.yaml") == mode(run / "results.json") == 0o644
    cached = [p for p in finished_run["cache"].rglob("*.npy")]
    assert cached and all(mode(p) == 0o644 for p in cached), {p.name: oct(mode(p)) for p in cached}
    root = _report_dir(finished_run, tmp_path)
    r = vitbench("report", root)
    assert r.returncode == 0, r.stderr[-3000:]
    for name in ("results.csv", "summary.md", "accuracy_vs_data.png", "efficiency.md"):
        assert mode(root / "report" / name) == 0o644, name


def test_run_task_never_skips_a_corrupt_results_json_as_done(planned_sweep, finished_run, tmp_path, capsys):
    sweep = tmp_path / "sweep"
    shutil.copytree(planned_sweep, sweep)
    text = (sweep / "sweep.json").read_text().replace(str(planned_sweep.resolve()), str(sweep.resolve()))
    (sweep / "sweep.json").write_text(text)
    results = Path(json.loads(text)["tasks"][0]["run_dir"]) / "results.json"
    results.parent.mkdir(parents=True)
    shutil.copy(finished_run["run"] / "results.json", results)
    _truncate(results)
    before = tree(tmp_path)
    capsys.readouterr()
    rc = main(["sweep", "run-task", str(sweep), "0"])
    out, err = capsys.readouterr()
    assert_one_line_error(rc, err, str(results), "corrupt", "sweep resume")
    assert tree(tmp_path) == before


def test_a_teacher_trained_on_data_this_user_cannot_see_still_teaches(finished_run, tmp_path):
    """A teacher run passed between people names its dataset path on their machine: only its classes matter."""
    teacher = tmp_path / "teacher"
    shutil.copytree(finished_run["run"], teacher)
    _edit_yaml(teacher / "config.yaml", lambda c: c["data"].update(dataset="/nonexistent/their/fashion_mnist_tiny"))
    r = vitbench("train", "--backbone", "deit", "--preset", "micro", "--dataset", finished_run["data"],
                 "--max-epochs", "1", "--teacher", teacher, "--out", tmp_path / "student", "--wandb", "disabled")
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((tmp_path / "student" / "results.json").read_text())["teacher"] == str(teacher.resolve())


# ------------------------------------------------------------------ a reader that stops early

def test_output_into_a_pipe_closed_early_ends_quietly(tiny_fashion_mnist, tmp_path):
    """`vitbench sweep plan EXP --json | head -1`: a real pipe whose reader leaves after one line; the
    command ends with 141 (128 + SIGPIPE), as cat and git do, and says nothing (no traceback)."""
    import fcntl

    exp = tmp_path / "many.yaml"
    exp.write_text(yaml.safe_dump({
        "name": "many", "dataset": tiny_fashion_mnist, "samples_per_class": [5], "seeds": list(range(8)),
        "budget": {"max_epochs": 1}, "backbones": [{"name": "resnet"}], "resources": {"accelerator": "cpu"},
    }))
    read_end, write_end = os.pipe()
    # The smallest pipe Linux gives (a page): the plan's JSON cannot fit, so its writer meets the closed end.
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)
    proc = subprocess.Popen([sys.executable, "-m", "vitbench", "sweep", "plan", str(exp), "--sweep-dir",
                             str(tmp_path / "sweep"), "--json"], stdout=write_end, stderr=subprocess.PIPE, text=True)
    os.close(write_end)
    with os.fdopen(read_end) as reader:
        first = reader.readline()
    _, err = proc.communicate(timeout=300)
    assert first == "{\n" and proc.returncode == 141 and err == "", (first, proc.returncode, err[-3000:])


def test_replanning_never_imports_a_plugin_that_only_sweep_json_names(planned_sweep, tmp_path, capsys):
    """sweep.json may come from someone else: comparing it with the user's experiment imports nothing it names."""
    sweep, exp = tmp_path / "sweep", planned_sweep.parent / "tiny.yaml"
    assert vitbench_here(capsys, "sweep", "plan", exp, "--sweep-dir", sweep)[0] == 0
    marker, plugin = tmp_path / "PWNED", tmp_path / "evil_plugin.py"
    plugin.write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n")
    _edit_json(sweep / "sweep.json", lambda s: s["experiment"].__setitem__("plugins", [str(plugin)]))
    before = tree(sweep)
    rc, err = vitbench_here(capsys, "sweep", "plan", exp, "--sweep-dir", sweep)
    assert_one_line_error(rc, err, "another version")
    assert not marker.exists() and tree(sweep) == before


@pytest.mark.parametrize("damage", ["hostile", "truncated"])
def test_resuming_from_a_hostile_or_truncated_checkpoint_is_a_one_line_error(damage, finished_run, tmp_path):
    """An unfinished run's newest checkpoint is loaded by Lightning: vitbench checks it first, runs no code."""
    run = tmp_path / "run"
    shutil.copytree(finished_run["run"], run)
    (run / "results.json").unlink()  # unfinished: rerunning the same command resumes from the newest checkpoint
    _edit_yaml(run / "config.yaml", lambda c: c.__setitem__("out", str(run)))
    marker, ckpt = tmp_path / "PWNED", run / "checkpoints" / "last.ckpt"
    if damage == "hostile":
        torch.save({"state_dict": {}, "evil": Evil(marker)}, ckpt)
    else:
        _truncate(ckpt)
    config = (run / "config.yaml").read_bytes()
    r = vitbench("train", "--backbone", "resnet", "--preset", "micro", "--dataset", finished_run["data"],
                 "--max-epochs", "1", "--batch-size", "64", "--out", run, "--wandb", "disabled",
                 env={"VITBENCH_CACHE": str(finished_run["cache"])})
    assert_one_line_error(r.returncode, r.stderr, str(ckpt), "delete it")
    assert not marker.exists() and (run / "config.yaml").read_bytes() == config and not (run / "results.json").exists()
