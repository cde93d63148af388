"""vitbench.data on the real Fashion-MNIST and on small datasets made here (no mocks)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from vitbench.data import ImageClassificationDataModule, load_source, split_indices
from vitbench.data.decode import labels_of
from vitbench.data.fashion_mnist import SYSTEM_DIR, arrow_cache_dir, read_idx
from vitbench.data.transforms import BatchTransform, parse_randaugment
from vitbench.errors import VitbenchError

HUB_NAMES = ["T - shirt / top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
             "Ankle boot"]
FRACTIONS = [0.01, 0.05, 0.2, 1.0]

pytestmark = pytest.mark.skipif(
    not (SYSTEM_DIR / "train-images-idx3-ubyte.gz").exists(), reason="needs apt-get install dataset-fashion-mnist"
)


@pytest.fixture(scope="session")
def fmnist(vitbench_cache):
    return load_source("fashion_mnist")


@pytest.fixture(scope="session")
def fm_labels(fmnist):
    return labels_of(fmnist.train, "label")


@pytest.fixture(scope="session")
def fm_dm(fmnist):
    dm = ImageClassificationDataModule("fashion_mnist", fraction=0.05, batch_size=256)
    dm.setup()
    return dm


def pool_counts(labels, val):
    rest = np.setdiff1d(np.arange(len(labels)), val)
    return np.bincount(labels[rest], minlength=10)


# ---- Fashion-MNIST source --------------------------------------------------------------------------


def test_fashion_mnist_has_the_hub_schema(fmnist):
    from datasets import ClassLabel, Features, Image

    assert fmnist.train.features == Features({"image": Image(), "label": ClassLabel(names=HUB_NAMES)})
    assert fmnist.test.features == fmnist.train.features
    assert (len(fmnist.train), len(fmnist.test)) == (60000, 10000)
    assert (fmnist.image_column, fmnist.label_column, fmnist.class_names) == ("image", "label", HUB_NAMES)
    first = np.asarray(fmnist.train[0]["image"])
    assert first.shape == (28, 28) and first.dtype == np.uint8
    idx = read_idx(SYSTEM_DIR / "train-images-idx3-ubyte.gz")
    assert np.array_equal(first, idx[0]) and fmnist.train[0]["label"] == 9  # 9 = "Ankle boot" in both


def test_fashion_mnist_loads_fast_from_its_arrow_cache(fmnist):
    assert (arrow_cache_dir() / "dataset_dict.json").is_file()
    start = time.perf_counter()
    again = load_source("fashion_mnist")
    assert time.perf_counter() - start < 1.0
    assert again.train.cache_files and again.identity == fmnist.identity
    assert load_source("zalando-datasets/fashion_mnist").identity == fmnist.identity  # offline, via the built-in


# ---- subsets ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_subsets_are_nested_stratified_and_share_validation(fm_labels, seed):
    splits = [split_indices(fm_labels, val_fraction=0.1, fraction=f, seed=seed) for f in FRACTIONS]
    val = splits[0].val
    counts = pool_counts(fm_labels, val)
    for f, s in zip(FRACTIONS, splits):
        assert np.array_equal(s.val, val)
        assert np.intersect1d(s.train, val).size == 0
        assert np.all(np.abs(np.bincount(fm_labels[s.train], minlength=10) - f * counts) <= 1)
        assert np.all(np.diff(s.train) > 0)
    for small, big in zip(splits, splits[1:]):
        assert np.isin(small.train, big.train).all()
    assert len(splits[-1].train) + len(val) == 60000
    assert np.array_equal(val, split_indices(fm_labels, val_fraction=0.1, fraction=0.05, seed=seed + 7).val)


def test_subsets_are_deterministic_and_depend_on_the_seed(fm_labels):
    a = split_indices(fm_labels, val_fraction=0.1, fraction=0.05, seed=0)
    b = split_indices(fm_labels, val_fraction=0.1, fraction=0.05, seed=0)
    c = split_indices(fm_labels, val_fraction=0.1, fraction=0.05, seed=1)
    assert np.array_equal(a.train, b.train) and np.array_equal(a.val, b.val)
    assert not np.array_equal(a.train, c.train) and np.array_equal(a.val, c.val)


def test_samples_per_class_is_exact_and_nested(fm_labels):
    s5 = split_indices(fm_labels, val_fraction=0.1, samples_per_class=5, seed=3)
    s20 = split_indices(fm_labels, val_fraction=0.1, samples_per_class=20, seed=3)
    assert np.bincount(fm_labels[s5.train]).tolist() == [5] * 10
    assert np.isin(s5.train, s20.train).all()


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(fraction=0.00001), "no training image"),
        (dict(samples_per_class=6000), "exceeds the smallest class"),
    ],
)
def test_bad_subsets_are_errors(fm_labels, kwargs, words):
    with pytest.raises(VitbenchError) as err:
        split_indices(fm_labels, val_fraction=0.1, seed=0, **kwargs)
    assert words in str(err.value)


def test_smallest_working_fraction_is_suggested(fm_labels):
    with pytest.raises(VitbenchError) as err:
        split_indices(fm_labels, val_fraction=0.1, fraction=1e-5, seed=0)
    suggested = float(str(err.value).split("--fraction ")[1].split()[0])
    split_indices(fm_labels, val_fraction=0.1, fraction=suggested, seed=0)


# ---- the DataModule on Fashion-MNIST ----------------------------------------------------------------


def test_datamodule_on_fashion_mnist(fm_dm, fm_labels):
    info = fm_dm.describe()
    counts = pool_counts(fm_labels, fm_dm.val_indices)
    assert info["n_val"] == 6000 and info["n_test"] == 10000 and info["image_shape"] == [1, 28, 28]
    assert info["n_train"] == int(np.floor(0.05 * counts + 0.5).sum()) == 2700
    assert info["class_names"] == HUB_NAMES and sum(info["class_counts"].values()) == info["n_train"]
    assert info["mean"][0] == pytest.approx(0.2860, abs=1e-3) and info["std"][0] == pytest.approx(0.3530, abs=1e-3)
    assert (fm_dm.num_classes, fm_dm.native_image_size, fm_dm.native_chans, fm_dm.in_chans) == (10, 28, 1, 1)
    expected = split_indices(fm_labels, val_fraction=0.1, fraction=0.05, seed=0)
    assert np.array_equal(fm_dm.train_indices, expected.train) and np.array_equal(fm_dm.val_indices, expected.val)
    images, labels = next(iter(fm_dm.train_dataloader()))
    assert images.dtype == torch.uint8 and images.shape == (256, 1, 28, 28) and labels.dtype == torch.int64
    assert sum(len(y) for _, y in fm_dm.test_dataloader()) == 10000


def test_warm_setup_is_fast(fm_dm):
    start = time.perf_counter()
    dm = ImageClassificationDataModule("fashion_mnist", fraction=0.2, seed=1)
    dm.setup()
    dm.setup()
    assert time.perf_counter() - start < 1.0
    assert dm.in_memory and dm.mean == fm_dm.mean and dm.n_test == 10000


def test_a_cold_cache_reports_progress_and_a_warm_one_is_quiet(tiny_fashion_mnist, tmp_path, monkeypatch, capsys):
    """A first decode (minutes for a large dataset) says how far it is on stderr, then that it is done; the
    cached path says nothing. The clock is shortened (vitbench.utils.DELAY, EVERY: 2 s, then every 5 s)
    so that the tiny real Fashion-MNIST, decoded in a fraction of a second, shows it."""
    import re

    import vitbench.utils

    monkeypatch.setenv("VITBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(vitbench.utils, "DELAY", 0.0)
    monkeypatch.setattr(vitbench.utils, "EVERY", 0.01)
    capsys.readouterr()
    ImageClassificationDataModule(tiny_fashion_mnist).setup()
    captured = capsys.readouterr()
    assert captured.out == ""  # stdout stays for results (`vitbench data --json`)
    lines = captured.err.splitlines()
    assert all(line.startswith(f"vitbench: preparing {tiny_fashion_mnist}: ") for line in lines), lines
    for split, n in (("train", 400), ("test", 200)):
        what = f": decoding {n} images of split '{split}' (cached for later runs) ... "
        ours = [line for line in lines if what in line]
        percents = [int(m.group(1)) for line in ours if (m := re.search(r" \.\.\. (\d+) % \(\d+ s\)$", line))]
        assert percents and percents == sorted(percents) and percents[-1] <= 100, lines
        assert re.search(r" \.\.\. done in \d+ s$", ours[-1]), lines

    ImageClassificationDataModule(tiny_fashion_mnist).setup()
    assert capsys.readouterr().err == ""


def test_eval_transform_normalises_the_train_data():
    dm = ImageClassificationDataModule("fashion_mnist", fraction=1.0, batch_size=60000)
    images, _ = next(iter(dm.train_dataloader()))
    assert len(images) == 54000
    x = dm.eval_transform(images)
    assert x.dtype == torch.float32 and x.shape == (54000, 1, 28, 28)
    assert x.mean().item() == pytest.approx(0.0, abs=1e-3) and x.std().item() == pytest.approx(1.0, abs=1e-3)


# ---- other datasets made here -----------------------------------------------------------------------


def _rgb_dataset(path: Path, *, label_type="classlabel"):
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value

    rng = np.random.default_rng(0)
    label_feature = ClassLabel(names=["red", "green", "blue"]) if label_type == "classlabel" else Value("int64")
    features = Features({"img": Image(), "fine_label": label_feature, "note": Value("string")})

    def make(n, odd=0):
        imgs = [rng.integers(0, 256, (12, 12, 3), dtype=np.uint8) for _ in range(n)]
        imgs += [rng.integers(0, 256, (10, 10, 3), dtype=np.uint8) for _ in range(odd)]  # resized to 12x12
        labels = [i % 3 for i in range(n + odd)]
        data = {"img": imgs, "fine_label": labels, "note": ["x"] * (n + odd)}
        return Dataset.from_dict(data, features=features), imgs

    (train, train_imgs), (test, _) = make(60, odd=3), make(15)
    DatasetDict({"train": train, "test": test}).save_to_disk(str(path))
    return train_imgs


def test_datamodule_on_another_dataset(tmp_path):
    originals = _rgb_dataset(tmp_path / "rgb")
    dm = ImageClassificationDataModule(str(tmp_path / "rgb"), val_fraction=0.2, fraction=0.5, batch_size=8,
                                       image_size=16)
    info = dm.describe()
    assert info["image_shape"] == [3, 12, 12] and info["num_classes"] == 3 and info["n_test"] == 15
    assert info["class_names"] == ["red", "green", "blue"] and info["n_val"] == 12
    assert list(info["class_counts"].values()) == [9, 9, 9]  # 21 per class, 4 to validation, half of 17 rounds up
    assert dm._state.source.image_column == "img" and dm._state.source.label_column == "fine_label"
    assert dm.in_chans == 3 and dm.image_size == 16 and len(dm.mean) == 3
    first = int(dm.train_indices[0])
    images, _ = dm._state.train_set.__getitems__([0])  # the decoded rows behind the device batches
    assert np.array_equal(images[0].numpy(), originals[first].transpose(2, 0, 1))  # PNG round trip is lossless
    x, y = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert x.shape == (8, 3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64

    explicit = ImageClassificationDataModule(str(tmp_path / "rgb"), image_column="img", label_column="fine_label",
                                             val_fraction=0.2)
    streamed = ImageClassificationDataModule(str(tmp_path / "rgb"), val_fraction=0.2, in_memory_limit_gb=0)
    assert not streamed.in_memory and explicit.in_memory
    for a, b in zip(explicit.val_dataloader(), streamed.val_dataloader()):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert streamed.mean == pytest.approx(explicit.mean, abs=0.02)


def test_datamodule_on_an_imagefolder(tmp_path):
    from PIL import Image

    for split, n in (("train", 6), ("test", 2)):
        for cls in ("ants", "bees"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(tmp_path / split / cls / f"{i}.png")
    dm = ImageClassificationDataModule(str(tmp_path), val_fraction=0.0, in_chans=3, image_size=8, batch_size=4)
    info = dm.describe()
    assert info["class_names"] == ["ants", "bees"] and info["image_shape"] == [1, 8, 8]
    assert (info["n_train"], info["n_val"], info["n_test"]) == (12, 0, 4) and dm.val_dataloader() == []
    x, _ = dm.on_after_batch_transfer(next(iter(dm.test_dataloader())), 0)
    assert x.shape == (4, 3, 8, 8) and torch.equal(x[:, 0], x[:, 2])


def test_randaugment_runs_in_the_dataset(tmp_path):
    from torchvision.transforms import v2

    ra = parse_randaugment("rand-m7-n3")
    assert isinstance(ra, v2.RandAugment) and (ra.num_ops, ra.magnitude) == (3, 7)
    _rgb_dataset(tmp_path / "rgb")
    dm = ImageClassificationDataModule(str(tmp_path / "rgb"), randaugment="rand-m9-n2", batch_size=16)
    images, _ = next(iter(dm.train_dataloader()))
    assert images.dtype == torch.uint8 and images.shape == (16, 3, 12, 12)
    with pytest.raises(VitbenchError, match="rand-m9-n2"):
        parse_randaugment("autoaugment")


# ---- BatchTransform ----------------------------------------------------------------------------------


def test_batch_transform_crop_flip_and_eval():
    images = torch.arange(2 * 36, dtype=torch.uint8).view(2, 1, 6, 6).repeat(100, 1, 1, 1)
    plain = dict(image_size=6, in_chans=1, mean=[0.0], std=[1.0])
    eval_tf = BatchTransform(**plain)
    assert torch.equal(eval_tf(images), eval_tf(images))
    assert torch.allclose(eval_tf(images), images.float() / 255)
    assert torch.equal(BatchTransform(**plain, train=True)(images), eval_tf(images))

    cropped = BatchTransform(**plain, train=True, padding=2)(images)
    assert cropped.shape == images.shape
    padded = torch.nn.functional.pad(images.float() / 255, (2, 2, 2, 2))
    offsets = set()
    for i in range(len(images)):
        hits = [(dy, dx) for dy in range(5) for dx in range(5)
                if torch.equal(cropped[i], padded[i, :, dy : dy + 6, dx : dx + 6])]
        assert hits, "every output is a crop of the zero-padded image"
        offsets.add(hits[0])
    assert len(offsets) > 5

    flipped = BatchTransform(**plain, train=True, hflip=True)(images)
    is_flip = torch.tensor([torch.equal(flipped[i], eval_tf(images)[i].flip(-1)) for i in range(len(images))])
    is_same = torch.tensor([torch.equal(flipped[i], eval_tf(images)[i]) for i in range(len(images))])
    assert (is_flip | is_same).all() and is_flip.any() and is_same.any()


def test_batch_transform_resizes_and_converts_channels():
    grey = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    rgb = BatchTransform(image_size=32, in_chans=3, mean=[0.5], std=[0.25])(grey)
    assert rgb.shape == (4, 3, 32, 32) and torch.equal(rgb[:, 0], rgb[:, 1])
    colour = torch.randint(0, 256, (4, 3, 12, 12), dtype=torch.uint8)
    assert BatchTransform(image_size=12, in_chans=1, mean=[0.5] * 3, std=[0.25] * 3)(colour).shape == (4, 1, 12, 12)


# ---- under a Trainer --------------------------------------------------------------------------------


def test_lightning_uses_train_transform_only_while_training(fm_dm):
    import lightning as L

    class Probe(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(28 * 28, 10)
            self.seen = []

        def _step(self, batch):
            x, y = batch
            self.seen.append((self.trainer.training, x.dtype, tuple(x.shape[1:])))
            return torch.nn.functional.cross_entropy(self.layer(x.flatten(1)), y)

        def training_step(self, batch, batch_idx):
            return self._step(batch)

        def validation_step(self, batch, batch_idx):
            return self._step(batch)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    probe = Probe()
    trainer = L.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        accelerator="cpu", num_sanity_val_steps=0)
    trainer.fit(probe, datamodule=fm_dm)
    assert [s[0] for s in probe.seen] == [True, True, False]
    assert all(dtype == torch.float32 and shape == (1, 28, 28) for _, dtype, shape in probe.seen)


# ---- device-resident batches --------------------------------------------------------------------------


def test_in_memory_data_is_drawn_by_index_without_a_dataloader(fm_dm, tmp_path):
    from torch.utils.data import DataLoader

    from vitbench.data.device_batches import DeviceBatches

    assert fm_dm.device_resident
    loader = fm_dm.train_dataloader()
    assert isinstance(loader, DeviceBatches) and len(loader) == -(-fm_dm.n_train // 256)
    images, labels = fm_dm.arrays()[:2]
    seen = []
    for x, y in loader:
        assert x.dtype == torch.uint8 and x.shape[1:] == (1, 28, 28) and len(x) == len(y) <= 256
        seen.append(x)
    # every training image once per epoch, and none of the validation images
    got = torch.cat(seen).flatten(1)
    want = images[torch.as_tensor(fm_dm.train_indices)].flatten(1)
    assert sorted(map(bytes, got.numpy())) == sorted(map(bytes, want.numpy()))
    val = fm_dm.val_dataloader()
    assert sum(len(y) for _, y in val) == fm_dm.n_val and len(next(iter(val))[1]) == fm_dm.eval_batch_size
    # per-image RandAugment runs in DataLoader workers, so it keeps the DataLoader
    with_ra = ImageClassificationDataModule("fashion_mnist", fraction=0.05, randaugment="rand-m9-n2")
    with_ra.setup()
    assert not with_ra.device_resident and isinstance(with_ra.train_dataloader(), DataLoader)


def test_device_batches_shuffle_per_epoch_and_shard_across_ranks():
    from vitbench.data.device_batches import DeviceBatches

    n = 103
    images = torch.arange(200, dtype=torch.uint8).view(200, 1, 1, 1)
    labels = torch.arange(200)
    rows = np.arange(50, 50 + n)
    epoch = {"now": 0}

    def shards(shuffle, world=2, batch=8):
        out = []
        for rank in range(world):
            b = DeviceBatches(images, labels, rows, batch, shuffle=shuffle, seed=3, epoch=lambda: epoch["now"],
                              rank=rank, world_size=world)
            out.append(torch.cat([y for _, y in b]).tolist())
            assert len(out[-1]) <= len(b) * batch
        return out

    a, b = shards(shuffle=True)
    assert len(a) == len(b) == 52  # padded like DistributedSampler: the same number of steps on every rank
    assert set(a) | set(b) == set(rows.tolist()) and len(set(a) & set(b)) == 1  # one image repeats as padding
    assert shards(shuffle=True) == [a, b]  # seeded: the same epoch, the same order
    epoch["now"] = 1
    assert shards(shuffle=True) != [a, b]  # a new order each epoch
    a, b = shards(shuffle=False)  # evaluation: every image exactly once, no padding
    assert sorted(a + b) == rows.tolist()
    (single,) = shards(shuffle=False, world=1)
    assert single == rows.tolist()
    # a compiled model drops the partial last batch, unless there is no full one
    dropped = DeviceBatches(images, labels, rows, 8, shuffle=True, drop_last=True)
    assert len(dropped) == 12 and [len(y) for _, y in dropped] == [8] * 12
    small = DeviceBatches(images, labels, rows[:5], 8, shuffle=True, drop_last=True)
    assert [len(y) for _, y in small] == [5]


# ---- bad inputs ----------------------------------------------------------------------------------------


def test_bad_inputs_are_one_line_errors(tmp_path, fmnist):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not images")
    _rgb_dataset(tmp_path / "intlabels", label_type="int")
    cases = [
        (dict(dataset="no_such_dataset_xyz"),
         ["unknown dataset 'no_such_dataset_xyz'", "save_to_disk", "imagefolder", "parquet", "Hub"]),
        (dict(dataset=str(tmp_path / "missing" / "dir")), ["unknown dataset", "no such file or folder"]),
        (dict(dataset="fashion_mnist", image_column="picture"),
         ["no column 'picture'", "image, label", "--image-column"]),
        (dict(dataset="fashion_mnist", label_column="image"), ["not a ClassLabel", "cast_column"]),
        (dict(dataset=str(tmp_path / "intlabels")), ["no ClassLabel column", "--label-column", "cast_column"]),
        (dict(dataset=str(tmp_path / "intlabels"), label_column="fine_label"),
         ["'fine_label'", "not a ClassLabel", "cast_column"]),
        (dict(dataset=str(tmp_path / "notes")), ["is not a dataset"]),
        (dict(dataset="fashion_mnist", test_split="validation"), ["no split 'validation'", "train, test"]),
        (dict(dataset="fashion_mnist", fraction=0.0), ["fraction must be in (0, 1]"]),
        (dict(dataset="fashion_mnist", fraction=1.5), ["fraction must be in (0, 1]"]),
        (dict(dataset="fashion_mnist", fraction=0.5, samples_per_class=3), ["both fraction and samples_per_class"]),
        (dict(dataset="fashion_mnist", seed=-1), ["seed must be in [0, "]),
        (dict(dataset="fashion_mnist", fraction=0.0001, val_fraction=0.999), ["no training image"]),
    ]
    for kwargs, words in cases:
        with pytest.raises(VitbenchError) as err:
            ImageClassificationDataModule(**kwargs).setup()
        message = str(err.value)
        assert "\n" not in message and all(w in message for w in words), (kwargs, message)
