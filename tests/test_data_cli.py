"""``vitbench data``: as a real subprocess for one happy path and one mistake, in-process for the rest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vitbench.cli import main
from vitbench.data.fashion_mnist import SYSTEM_DIR

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    not (SYSTEM_DIR / "train-images-idx3-ubyte.gz").exists(), reason="needs apt-get install dataset-fashion-mnist"
)


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory):
    """The real ``python -m vitbench`` runs, started together: each spends seconds on imports."""
    cwd = tmp_path_factory.mktemp("cli")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    argv = {
        "good": ["data", "fashion_mnist", "--fraction", "0.05", "--seed", "0", "--json", "--indices", "a"],
        "bad": ["data", "fashion_mnist", "--fraction", "1.5", "--indices", "out"],
    }
    procs = {
        name: subprocess.Popen([sys.executable, "-m", "vitbench", *args], cwd=cwd, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for name, args in argv.items()
    }
    return cwd, {name: (p, *p.communicate(timeout=300)) for name, p in procs.items()}


def load(folder: Path):
    return np.load(folder / "train.npy"), np.load(folder / "val.npy")


def test_data_json_subsets_are_reproducible_and_nested(real_runs, tmp_path, capsys):
    cwd, runs = real_runs
    proc, stdout, stderr = runs["good"]
    assert proc.returncode == 0, stderr
    info = json.loads(stdout)
    assert info["n_val"] == 6000 and info["n_test"] == 10000 and info["image_shape"] == [1, 28, 28]
    assert info["n_train"] == round(0.05 * (60000 - info["n_val"])) == 2700
    train_a, val_a = load(cwd / "a")
    assert len(train_a) == info["n_train"] and len(val_a) == info["n_val"]

    assert main(["data", "fashion_mnist", "--fraction", "0.05", "--seed", "0", "--json",
                 "--indices", str(tmp_path / "b")]) == 0
    assert json.loads(capsys.readouterr().out) == info
    train_b, val_b = load(tmp_path / "b")
    assert np.array_equal(train_a, train_b) and np.array_equal(val_a, val_b)

    assert main(["data", "fashion_mnist", "--fraction", "0.2", "--seed", "0", "--indices", str(tmp_path / "c")]) == 0
    table = capsys.readouterr().out
    assert "10800 of 54000" in table and "Ankle boot" in table and "0.2860" in table
    train_c, val_c = load(tmp_path / "c")
    assert np.isin(train_a, train_c).all() and np.array_equal(val_a, val_c)


def test_data_bad_input_exits_2_with_one_line_and_writes_nothing(real_runs):
    cwd, runs = real_runs
    proc, stdout, stderr = runs["bad"]
    assert proc.returncode == 2 and stdout == ""
    assert stderr.count("\n") == 1 and stderr.startswith("vitbench: error: fraction must be in (0, 1]")
    assert not (cwd / "out").exists()


@pytest.mark.parametrize(
    "args, words",
    [
        (["no_such_dataset_xyz"], "unknown dataset 'no_such_dataset_xyz'"),
        (["fashion_mnist", "--label-column", "image"], "not a ClassLabel"),
        (["fashion_mnist", "--image-column", "pixels"], "no column 'pixels'"),
        (["fashion_mnist", "--fraction", "0"], "fraction must be in (0, 1]"),
        (["fashion_mnist", "--fraction", "0.00001"], "no training image"),
        (["fashion_mnist", "--samples-per-class", "100000"], "exceeds the smallest class"),
    ],
)
def test_data_bad_inputs_in_process(tmp_path, capsys, args, words):
    assert main(["data", *args, "--indices", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and words in captured.err
    assert not (tmp_path / "out").exists()


def test_fraction_and_samples_per_class_are_exclusive(capsys):
    assert main(["data", "fashion_mnist", "--fraction", "0.1", "--samples-per-class", "5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--samples-per-class and --fraction exclude each other" in err
