"""Corrupt and unexpected files: a one-line error, exit 2, no traceback, nothing written or lost.

One table per command family (``data``, ``train``, ``sweep plan``). Each case builds the hostile
file in a fresh folder, runs the real CLI in this process (fast; the same code path as the
``vitbench`` command), and compares that folder's tree, byte for byte, before and after.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from vitbench.cli import main
from vitbench.data.fashion_mnist import SYSTEM_DIR

IDX_FILES = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
             "t10k-labels-idx1-ubyte.gz"]
needs_idx = pytest.mark.skipif(not (SYSTEM_DIR / IDX_FILES[0]).exists(),
                               reason="needs apt-get install dataset-fashion-mnist")


def tree(root: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """Every path under ``root`` with a digest of its bytes (or 'dir'): what "nothing written or lost" compares."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if any(rel == s or rel.startswith(s + "/") for s in skip):
            continue
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def run_cli(argv: list[str], capfd) -> tuple[int, str]:
    capfd.readouterr()
    rc = main([str(a) for a in argv])
    _, err = capfd.readouterr()
    return rc, err


# ---------------------------------------------------------------------- hostile files, built per case

def _png(path: Path, value: int = 0, size: int = 8) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), value, np.uint8)).save(path)


def imagefolder(root: Path, bad_name: str, bad_bytes) -> Path:
    """A small imagefolder (train/test, two classes) with one file that is not a decodable image."""
    for split, n in (("train", 5), ("test", 2)):
        for cls in ("ants", "bees"):
            for i in range(n):
                _png(root / split / cls / f"{i}.png", 40 * i)
    bad = root / "train" / "bees" / bad_name
    good = (root / "train" / "ants" / "0.png").read_bytes()
    bad.write_bytes(bad_bytes(good))
    return bad


def idx_dir(root: Path, damage) -> Path:
    """A copy of the real IDX files with ``train-images`` damaged by ``damage(bytes) -> bytes``."""
    root.mkdir(parents=True)
    for name in IDX_FILES:
        shutil.copy(SYSTEM_DIR / name, root / name)
    target = root / IDX_FILES[0]
    target.write_bytes(damage(target.read_bytes()))
    return root


def _binary_junk() -> bytes:
    return bytes(range(256)) * 8 + b"\xff\xfe\x00\x9c"


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def fresh_cache(t: Path) -> dict:
    """An empty VITBENCH_CACHE: the IDX files are read only when no Arrow cache exists."""
    return {"VITBENCH_CACHE": str(t / "cache")}


def data_cases():
    """(id, setup(tmp) -> (argv, env, paths left out of the tree), words the error holds)."""

    def cache_is_a_file(t):
        write(t / "cache", "not a folder")
        return ["data", "fashion_mnist", "--fraction", "0.05"], {"VITBENCH_CACHE": str(t / "cache")}, ()

    def cache_under_a_file(t):
        write(t / "file", "x")
        return ["data", "fashion_mnist"], {"VITBENCH_CACHE": str(t / "file" / "cache")}, ()

    def idx(damage):
        def setup(t):
            env = {**fresh_cache(t), "VITBENCH_DATA_DIR": str(idx_dir(t / "idx", damage))}
            return ["data", "fashion_mnist"], env, ()
        return setup

    def data_dir_is_a_file(t):
        write(t / "idx", "x")
        return ["data", "fashion_mnist"], {**fresh_cache(t), "VITBENCH_DATA_DIR": str(t / "idx")}, ()

    def bad_image(name, damage):
        def setup(t):
            imagefolder(t / "imgs", name, damage)
            # The datasets builder keeps its Arrow copy of the folder in VITBENCH_CACHE (hf/: derived
            # data, left out); no decoded array or probed spec of the bad data may be cached.
            return ["data", t / "imgs"], fresh_cache(t), ("cache",)
        return setup

    def corrupt_dataset_dict(t):
        write(t / "ds" / "dataset_dict.json", _binary_junk())
        return ["data", t / "ds"], fresh_cache(t), ()

    def corrupt_arrow_file(t):
        from datasets import Dataset, DatasetDict

        part = Dataset.from_dict({"label": [0, 1]})
        DatasetDict({"train": part, "test": part}).save_to_disk(str(t / "ds"))
        arrow = next((t / "ds" / "train").glob("*.arrow"))
        arrow.write_bytes(arrow.read_bytes()[:40])
        return ["data", t / "ds"], fresh_cache(t), ()

    return [
        ("cache-is-a-file", cache_is_a_file, ["VITBENCH_CACHE=", "is a file", "set VITBENCH_CACHE to a folder"]),
        ("cache-under-a-file", cache_under_a_file, ["which is a file", "set VITBENCH_CACHE to a folder"]),
        pytest.param("idx-gz-truncated", idx(lambda b: b[: len(b) // 2]),
                     ["train-images-idx3-ubyte.gz is truncated", "replace it with the original"],
                     marks=needs_idx, id="idx-gz-truncated"),
        pytest.param("idx-gz-not-gzip", idx(lambda b: b"PK\x03\x04" + b[4:]),
                     ["train-images-idx3-ubyte.gz cannot be read", "replace it with the original"],
                     marks=needs_idx, id="idx-gz-not-gzip"),
        pytest.param("idx-gz-not-idx", idx(lambda b: gzip.compress(b"\x13\x37" + bytes(64))),
                     ["is not an unsigned-byte IDX file"], marks=needs_idx, id="idx-gz-not-idx"),
        pytest.param("idx-gz-empty", idx(lambda b: gzip.compress(b"")), ["is truncated"],
                     marks=needs_idx, id="idx-gz-empty"),
        ("data-dir-is-a-file", data_dir_is_a_file, ["VITBENCH_DATA_DIR=", "is a file, not a folder"]),
        ("imagefolder-junk-image", bad_image("broken.png", lambda good: b"this is not an image\n" * 4),
         ["image file", "bees/broken.png", "cannot be decoded", "replace or remove it"]),
        ("imagefolder-truncated-png", bad_image("cut.png", lambda good: good[: len(good) // 2]),
         ["bees/cut.png", "cannot be decoded"]),
        ("imagefolder-empty-image", bad_image("empty.png", lambda good: b""), ["bees/empty.png", "cannot be decoded"]),
        ("save-to-disk-corrupt-dict", corrupt_dataset_dict,
         ["cannot be read as a save_to_disk dataset", "save it again"]),
        ("save-to-disk-truncated-arrow", corrupt_arrow_file,
         ["cannot be read as a save_to_disk dataset", "save it again"]),
    ]


DATA_CASES = data_cases()


@pytest.mark.parametrize("name,setup,words", [c for c in DATA_CASES],
                         ids=[c[0] if isinstance(c, tuple) else c.id for c in DATA_CASES])
def test_data_hostile_files(name, setup, words, tmp_path, capfd, monkeypatch):
    check_case(setup, words, tmp_path, capfd, monkeypatch)


def check_case(setup, words, tmp_path, capfd, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv, env, skip = setup(tmp_path)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    before = tree(tmp_path, skip)
    rc, err = run_cli(argv, capfd)
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vitbench: error: ") and "Traceback" not in err, err
    for w in words:
        assert w in lines[0], lines[0]
    assert tree(tmp_path, skip) == before, "something was written or lost"
    for kind in ("decoded", "spec", "stats"):  # no cache entry derived from the bad data
        assert not (tmp_path / "cache" / kind).exists()


# ---------------------------------------------------------------------- train

def train_cases():
    """(id, setup(tmp, tiny dataset) -> (argv, env, left out), words)."""

    def argv(dataset, *extra):
        return ["train", "--backbone", "resnet", "--preset", "micro", "--dataset", dataset, "--max-steps", "2",
                "--wandb", "disabled", *extra]

    def out_is_a_file(t, ds):
        write(t / "run", "my notes")
        return argv(ds, "--out", t / "run"), {}, ()

    def out_under_a_file(t, ds):
        write(t / "runs", "x")
        return argv(ds, "--out", t / "runs" / "a"), {}, ()

    def default_out_under_a_file(t, ds):  # runs/<name> in the working directory, where `runs` is a file
        write(t / "runs", "x")
        return argv(ds), {}, ()

    def config(data):
        def setup(t, ds):
            write(t / "run.yaml", data)
            return argv(ds, "--config", t / "run.yaml", "--out", t / "out"), {}, ()
        return setup

    def cache_is_a_file(t, ds):
        write(t / "cache", "x")
        return argv(ds, "--out", t / "out"), {"VITBENCH_CACHE": str(t / "cache")}, ()

    def bad_image(t, ds):
        imagefolder(t / "imgs", "broken.png", lambda good: b"\x89PNG\r\n\x1a\n" + bytes(40))
        return argv(t / "imgs", "--out", t / "out"), fresh_cache(t), ("cache",)

    return [
        ("out-is-a-file", out_is_a_file, ["--out", "is a file, not a folder", "choose another --out"]),
        ("out-under-a-file", out_under_a_file, ["runs is a file, not a folder"]),
        ("default-out-under-a-file", default_out_under_a_file, ["runs is a file, not a folder"]),
        ("config-binary-junk", config(_binary_junk()), ["config file", "is not a text file", "pass a YAML file"]),
        ("config-utf16", config("optim:\n  lr: 0.001\n".encode("utf-16")), ["is not a text file"]),
        ("cache-is-a-file", cache_is_a_file, ["VITBENCH_CACHE=", "is a file"]),
        ("imagefolder-bad-png", bad_image, ["bees/broken.png", "cannot be decoded"]),
    ]


TRAIN_CASES = train_cases()


@pytest.mark.parametrize("name,setup,words", TRAIN_CASES, ids=[c[0] for c in TRAIN_CASES])
def test_train_hostile_files(name, setup, words, tiny_fashion_mnist, tmp_path, capfd, monkeypatch):
    check_case(lambda t: setup(t, tiny_fashion_mnist), words, tmp_path, capfd, monkeypatch)


# ---------------------------------------------------------------------- sweep plan

def sweep_cases():
    """(id, setup(tmp) -> (argv, env, left out), words): `sweep plan EXP` where EXP is not an experiment."""
    text = yaml.safe_dump({"name": "x", "dataset": "fashion_mnist", "fractions": [0.1], "seeds": [0],
                           "budget": {"max_steps": 2}, "backbones": [{"name": "resnet"}]})

    def exp(data):
        def setup(t):
            write(t / "exp.yaml", data)
            return ["sweep", "plan", t / "exp.yaml"], {}, ()
        return setup

    def a_folder(t):
        (t / "exp.yaml").mkdir()
        return ["sweep", "plan", t / "exp.yaml"], {}, ()

    return [
        ("binary-junk", exp(_binary_junk()), ["config file", "is not a text file"]),
        ("utf16-yaml", exp(text.encode("utf-16")), ["is not a text file"]),
        ("gzip-file", exp(gzip.compress(text.encode())), ["is not a text file"]),
        ("nul-bytes", exp(text.encode() + b"\x00\x00"), ["is not valid YAML"]),  # valid UTF-8, not YAML
        ("a-folder", a_folder, ["not found"]),
        ("yaml-list", exp("- a\n- b\n"), ["must be a mapping"]),
    ]


SWEEP_CASES = sweep_cases()


@pytest.mark.parametrize("name,setup,words", SWEEP_CASES, ids=[c[0] for c in SWEEP_CASES])
def test_sweep_plan_hostile_files(name, setup, words, tmp_path, capfd, monkeypatch):
    check_case(setup, words, tmp_path, capfd, monkeypatch)
