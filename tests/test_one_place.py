"""One place for each fact: who imports whom, who reads results.json, what picks the baseline.

* ``vitbench report`` and ``vitbench analyze`` decide the W&B mode without importing Lightning
  (:mod:`vitbench.wandb_mode`), checked on the real commands in a fresh interpreter;
* no vitbench module imports another that imports it back, deferred imports included;
* a results.json that does not read is one line from ``vitbench report`` and never "done";
* the comparison baseline is what the backbone class says (``Backbone.baseline``), written to
  results.json by training; results.json files from before that key report as they did.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _results(label: str, backbone: str, family: str, n_train: int, seed: int, acc: float, **extra) -> dict:
    """A results.json as ``vitbench train`` writes it (the fields the report reads)."""
    return {"label": label, "backbone": backbone, "family": family, "preset": "micro", "dataset": "fashion_mnist",
            "fraction": n_train / 54000, "n_train": n_train, "n_val": 6000, "seed": seed, "sweep": "s",
            "teacher": None, "epochs": 3, "steps": 300, "test_acc": acc, **extra}


def _write_runs(root: Path, runs: list[dict]) -> Path:
    for r in runs:
        run = root / "runs" / r["label"] / f"n{r['n_train']}-s{r['seed']}"
        run.mkdir(parents=True)
        (run / "results.json").write_text(json.dumps(r))
    return root


# ------------------------------------------------------------------ no Lightning in report and analyze

def _analysable_run(root: Path) -> Path:
    """A run dir ``vitbench analyze posembed`` reads: config.yaml, results.json and best.ckpt of a real ViT-micro."""
    import torch

    from vitbench.backbones import create_backbone
    from vitbench.config import build_config

    run = root / "vit-run"
    (run / "checkpoints").mkdir(parents=True)
    model = create_backbone("vit", "micro").create(num_classes=10, image_size=28, in_chans=1)
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}},
               run / "checkpoints" / "best.ckpt")
    cfg = build_config({"model": {"backbone": "vit", "preset": "micro"}, "wandb": {"mode": "auto"}},
                       check_paths=False)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    (run / "results.json").write_text(json.dumps({
        **_results("vit", "vit", "vit", 600, 0, 0.5), "image_size": 28, "in_chans": 1, "num_classes": 10}))
    return run


def test_report_and_analyze_never_import_lightning(tmp_path):
    """The real commands, each with its W&B step (mode auto, W&B disabled by WANDB_MODE), in one new interpreter.

    ``analyze attention`` is left out on purpose: it draws the run's test images through the run's own
    data module, a LightningDataModule, so it imports Lightning for its data, not for W&B.
    """
    sweep = _write_runs(tmp_path / "sweep", [_results(lb, lb, fam, n, 0, acc) for lb, fam, acc in
                                             (("resnet", "cnn", 0.8), ("vit", "vit", 0.6)) for n in (600, 1200)])
    run = _analysable_run(tmp_path)
    script = textwrap.dedent(f"""
        import json, sys
        from vitbench.cli import main
        codes = [
            main(["report", {str(sweep)!r}, "--out", {str(tmp_path / "report")!r}, "--wandb"]),
            main(["analyze", "posembed", {str(run)!r}, "--out", {str(tmp_path / "posembed")!r}]),
            main(["analyze", "cost", "--backbones", "vit", "--image-sizes", "28", "--in-chans", "1",
                  "--batch-size", "2", "--steps", "1", "--device", "cpu", "--json",
                  "--out", {str(tmp_path / "cost")!r}]),
        ]
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("lightning", "pytorch_lightning"))
        print(json.dumps({{"codes": codes, "lightning": loaded[:10], "wandb": "wandb" in sys.modules}}))
    """)
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    seen = json.loads(p.stdout.strip().splitlines()[-1])
    assert seen["codes"] == [0, 0, 0], p.stderr[-3000:]
    assert (tmp_path / "report" / "summary.md").is_file() and (tmp_path / "posembed" / "posembed.png").is_file()
    assert seen["wandb"], "the report's --wandb step did not run"  # so the mode was resolved on the way
    assert seen["lightning"] == [], f"Lightning was imported: {seen['lightning']}"


# ------------------------------------------------------------------ one results.json reader

def _one_line_error(capsys, *args) -> str:
    from vitbench.cli import main

    capsys.readouterr()
    rc = main([str(a) for a in args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("vitbench: error:") and "\n" not in err and "Traceback" not in err, err
    return err


BAD_RESULTS = {"not UTF-8": b'{"test_acc": 0.5, "label": "caf\xe9"}', "not JSON": b'{"test_acc": 0.5, "backbone": '}


def _tree(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


def test_report_on_a_folder_with_a_results_json_that_does_not_read_is_one_line(tmp_path, capsys):
    for kind, data in BAD_RESULTS.items():
        root = _write_runs(tmp_path / kind.replace(" ", "_"), [_results("resnet", "resnet", "cnn", 600, s, 0.8)
                                                             for s in (0, 1)])
        bad = root / "runs" / "resnet" / "n600-s1" / "results.json"
        bad.write_bytes(data)
        before = _tree(root)
        err = _one_line_error(capsys, "report", root)
        assert str(bad) in err and "corrupt" in err, (kind, err)
        assert _tree(root) == before, kind  # no report/ folder, nothing half-written


def _planned(tmp_path: Path) -> Path:
    from vitbench.cli import main

    exp = tmp_path / "exp.yaml"
    exp.write_text(yaml.safe_dump({
        "name": "one", "dataset": "fashion_mnist", "samples_per_class": [5], "seeds": [0, 1],
        "budget": {"max_epochs": 1}, "backbones": [{"name": "resnet"}, {"name": "vit"}],
        "resources": {"accelerator": "cpu"}, "wandb": {"mode": "disabled"},
    }))
    sweep = tmp_path / "sweep"
    assert main(["sweep", "plan", str(exp), "--sweep-dir", str(sweep)]) == 0
    return sweep


def test_a_planned_run_whose_results_json_does_not_read_is_not_done_and_not_reported(tmp_path, capsys):
    from vitbench.cli import main

    sweep = _planned(tmp_path)
    tasks = json.loads((sweep / "sweep.json").read_text())["tasks"]
    for t in tasks:
        run = Path(t["run_dir"])
        run.mkdir(parents=True)
        (run / "results.json").write_text(json.dumps(_results(t["label"], t["backbone"], "x", 50, t["seed"], 0.5)))
    for kind, data in BAD_RESULTS.items():
        bad = Path(tasks[1]["run_dir"]) / "results.json"
        bad.write_bytes(data)
        capsys.readouterr()
        assert main(["sweep", "status", str(sweep), "--json"]) == 0
        states = [row["state"] for row in json.loads(capsys.readouterr().out)]
        assert states[1] == "corrupt" and states.count("done") == len(tasks) - 1, (kind, states)
        before = _tree(tmp_path)
        err = _one_line_error(capsys, "report", sweep)
        assert str(bad) in err and "corrupt" in err, (kind, err)
        assert _tree(tmp_path) == before, kind


# ------------------------------------------------------------------ the baseline is the backbone's to say

BASELINE_PLUGIN = '''
"""A user's convolutional reference, declared a baseline by its class, under a name vitbench has never seen."""

from torch import nn

import vitbench


class ReferenceConv(vitbench.Backbone):
    name = "one_place_reference"
    family = "conv"
    baseline = True
    presets = {"micro": dict(width=8)}

    def build(self, num_classes, image_size, in_chans):
        w = self.config["width"]
        return nn.Sequential(nn.Conv2d(in_chans, w, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(w, num_classes))
'''


def _efficiency_baseline(report_dir: Path) -> str:
    text = (report_dir / "efficiency.md").read_text()
    return text.split("crosses the CNN baseline\n")[1].strip().splitlines()[0]


def test_a_plugin_that_declares_itself_a_baseline_is_the_report_baseline(tiny_fashion_mnist, tmp_path):
    """The class attribute goes into results.json at training time, and the report compares with it."""
    from vitbench.report import write_report

    plugin = tmp_path / "reference_conv.py"
    plugin.write_text(BASELINE_PLUGIN)
    sweep = tmp_path / "sweep"
    run = sweep / "runs" / "reference" / "n360-s0"
    p = subprocess.run([sys.executable, "-m", "vitbench", "train", "--plugin", plugin, "--backbone",
                        "one_place_reference", "--dataset", tiny_fashion_mnist, "--max-epochs", "1",
                        "--batch-size", "64", "--out", run, "--wandb", "disabled"],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr[-3000:]
    trained = json.loads((run / "results.json").read_text())
    assert trained["baseline"] is True and trained["family"] == "conv"
    # A transformer at the same size (its own results.json, as training writes them: baseline false).
    _write_runs(sweep, [_results("vit", "vit", "vit", trained["n_train"], 0, 0.2, baseline=False)])
    lines: list[str] = []
    out = write_report(sweep, echo=lines.append, targets=(0.5,))
    assert _efficiency_baseline(out).startswith("Baseline: `one_place_reference`.")
    assert any("one_place_reference" in ln and "vit" in ln and " leads " in ln for ln in lines), lines
    table = [ln for ln in (out / "summary.md").read_text().splitlines() if ln.startswith("| `")]
    assert table[0].startswith("| `one_place_reference`")  # baselines come first


def test_results_json_without_the_key_falls_back_to_the_cnn_family_and_the_key_wins_when_present(tmp_path):
    from vitbench.report import collect_sweep, stats

    def baseline(runs: list[dict]) -> str | None:
        root = tmp_path / f"s{len(list(tmp_path.iterdir()))}"
        return stats.baseline_label(collect_sweep(_write_runs(root, runs)))

    sizes = (600, 1200)
    old = [_results("resnet", "resnet", "cnn", n, 0, 0.8) for n in sizes]  # written before the key existed
    vit = [_results("vit", "vit", "vit", n, 0, 0.6) for n in sizes]
    assert baseline(old + vit) == "resnet"
    # The key wins over the family either way: a CNN that is not a baseline, an MLP that is.
    not_baseline = [{**r, "baseline": False} for r in old]
    assert baseline(not_baseline + vit) is None
    mlp = [_results("mlp", "my_mlp", "mlp", n, 0, 0.7, baseline=True) for n in sizes]
    assert baseline(not_baseline + mlp + vit) == "mlp"
    # A distilled run of a baseline backbone is not the baseline its own twin is compared with.
    distilled = [_results("resnet_distilled", "resnet", "cnn", n, 0, 0.81, teacher="runs/t", baseline=True)
                 for n in sizes]
    assert baseline(distilled + old + vit) == "resnet"


def test_no_vitbench_module_branches_on_a_backbone_name():
    """Which backbone does what is said by its class; a name compared anywhere else is a second place for it."""
    import ast

    from vitbench.backbones import list_backbones

    names = set(list_backbones())
    found = []
    for path in sorted((ROOT / "vitbench").rglob("*.py")):
        if path.parent.name == "backbones" and path.stem in names:
            continue  # a backbone's own module names itself
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Compare):
                sides = [node.left, *node.comparators]
                sides += [e for c in sides if isinstance(c, (ast.Tuple, ast.List, ast.Set)) for e in c.elts]
                consts = [c.value for c in sides if isinstance(c, ast.Constant)]
                found += [f"{path.relative_to(ROOT)}:{node.lineno} compares with '{v}'" for v in consts if v in names]
    assert found == []


# ------------------------------------------------------------------ no import cycles

def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _under_type_checking(tree) -> set[int]:
    """The nodes inside ``if TYPE_CHECKING:``: annotations only, never imported when the code runs."""
    import ast

    skip: set[int] = set()
    for node in ast.walk(tree):
        test = getattr(node, "test", None) if isinstance(node, ast.If) else None
        if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
                isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skip


def import_graph() -> dict[str, set[str]]:
    """vitbench module -> the vitbench modules it imports, at module level or inside a function.

    ``from vitbench.x import y`` counts as importing ``vitbench.x.y`` where that is a module, else
    ``vitbench.x``; relative imports are resolved. Imports by name at run time (``importlib``: the
    backbone registry's built-in families and plugins, the packages' lazy exports) are not in it.
    """
    import ast

    files = {_module_name(p): p for p in (ROOT / "vitbench").rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        tree = ast.parse(path.read_text(), str(path))
        skip = _under_type_checking(tree)
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in files:
                    t = t.rpartition(".")[0]
                if t and t != mod:
                    graph[mod].add(t)
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a -> b -> ... -> a) per strongly connected group of modules that import each other."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while not group or w != v:
                w = stack.pop()
                group.add(w)
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    cycles = []
    for group in groups:
        start = min(group)
        paths = [[start]]
        while paths:  # breadth first, inside the group: the shortest way back to the start
            path = paths.pop(0)
            nxt = sorted(graph[path[-1]] & group)
            if start in nxt:
                cycles.append(path + [start])
                break
            paths += [path + [w] for w in nxt if w not in path]
    return cycles


def test_the_cycle_finder_finds_a_deferred_import_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_cycles(graph) == [["a", "b", "c", "a"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_no_vitbench_module_imports_one_that_imports_it_back():
    graph = import_graph()
    assert "vitbench.training.convergence" in graph["vitbench.report.collect"]  # the graph sees real imports
    assert "vitbench.wandb_mode" in graph["vitbench.analysis.wandb_log"]  # function-level ones too
    cycles = import_cycles(graph)
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)
