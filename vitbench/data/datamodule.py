"""The LightningDataModule: a source, a nested subset of it, loaders and device-side augmentation.

``setup()`` works without a Trainer (the ``vitbench data`` command and the tests call
it directly) and does its work once, so Lightning calling it again is free.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from vitbench.config import DataConfig, ModelConfig, TrainConfig, check, check_value
from vitbench.data import decode
from vitbench.data.device_batches import DeviceBatches
from vitbench.data.sources import DatasetSource, load_source
from vitbench.data.subsets import VAL_SEED, split_indices
from vitbench.data.torch_data import InMemoryImages, StreamingImages, collate
from vitbench.data.transforms import BatchTransform, parse_randaugment
from vitbench.errors import VitbenchError
from vitbench.utils import Progress

# Digits change meaning when mirrored; everything else defaults to flipping.
NO_FLIP = {"mnist", "ylecun/mnist", "kmnist", "emnist", "svhn", "ufldl-stanford/svhn"}
_STATS_SAMPLE = 2000  # images a streamed dataset's mean/std are estimated from
# Evaluation keeps no activations for backward, so it takes bigger batches: fewer steps, same result.
MIN_EVAL_BATCH = 512


@dataclass
class _State:
    source: DatasetSource
    spec: decode.ImageSpec
    labels: np.ndarray  # of the whole source train split
    train_indices: np.ndarray
    val_indices: np.ndarray
    mean: list
    std: list
    in_memory: bool
    train_set: Any
    val_set: Any
    test_set: Any
    tensors: dict | None = None  # in memory: the uint8 splits and labels, per device they were moved to


class ImageClassificationDataModule(L.LightningDataModule):
    """Images and labels from any Hugging Face image-classification dataset, as uint8 batches.

    Parameters are the keys of :class:`vitbench.config.DataConfig` (their defaults, bounds and
    meaning are declared there), plus ``seed`` (the subset's, ``TrainConfig.seed``), ``image_size``
    (``ModelConfig.image_size``) and ``in_chans`` (what the backbone wants; None keeps the data's
    own) and ``drop_last`` (training drops each epoch's last partial batch when there is a full one:
    a compiled model would recompile for its shape).
    """

    def __init__(
        self,
        dataset: str = DataConfig.dataset,
        image_column: str | None = DataConfig.image_column,
        label_column: str | None = DataConfig.label_column,
        train_split: str = DataConfig.train_split,
        test_split: str = DataConfig.test_split,
        val_fraction: float = DataConfig.val_fraction,
        fraction: float = DataConfig.fraction,
        samples_per_class: int | None = DataConfig.samples_per_class,
        batch_size: int = DataConfig.batch_size,
        num_workers: int = DataConfig.num_workers,
        random_crop_padding: int = DataConfig.random_crop_padding,
        hflip: bool | None = DataConfig.hflip,
        randaugment: str | None = DataConfig.randaugment,
        in_memory_limit_gb: float = DataConfig.in_memory_limit_gb,
        seed: int = TrainConfig.seed,
        image_size: int | None = ModelConfig.image_size,
        in_chans: int | None = None,
        drop_last: bool = False,
    ):
        super().__init__()
        self.save_hyperparameters(logger=False)  # train() logs the whole resolved run config to W&B
        # A public API too: what train() passes was checked already, and is checked again by the same checks.
        # The module keeps what the checks return: a fraction passed as "0.5" is the number 0.5 from here on.
        data = check(DataConfig(**{f.name: self.hparams[f.name] for f in dataclasses.fields(DataConfig)}),
                     check_paths=False)
        self.save_hyperparameters({**dataclasses.asdict(data), "seed": check_value(TrainConfig, "seed", seed),
                                   "image_size": check_value(ModelConfig, "image_size", image_size)}, logger=False)
        if in_chans not in (None, 1, 3):
            raise VitbenchError(f"in_chans must be 1 or 3, got {in_chans}")
        self.augment = parse_randaugment(data.randaugment)  # fails now, not in a DataLoader worker
        self.hflip = data.hflip if data.hflip is not None else data.dataset not in NO_FLIP
        self._state: _State | None = None
        self._train_batches: DeviceBatches | None = None  # the training pass a checkpoint records
        self._resume_train: dict | None = None  # where a resumed run's training pass stood
        self.train_transform: BatchTransform | None = None
        self.eval_transform: BatchTransform | None = None

    # -- Lightning hooks ---------------------------------------------------------------

    def prepare_data(self) -> None:
        # Runs on one process per node before the others' setup(): they find the caches built.
        self.setup()

    def setup(self, stage: str | None = None) -> None:
        if self._state is not None:
            return
        h = self.hparams
        source = load_source(
            h.dataset, train_split=h.train_split, test_split=h.test_split, image_column=h.image_column,
            label_column=h.label_column,
        )
        labels = decode.labels_of(source.train, source.label_column)
        test_labels = decode.labels_of(source.test, source.label_column)
        split = split_indices(
            labels, val_fraction=h.val_fraction, fraction=h.fraction, samples_per_class=h.samples_per_class,
            seed=h.seed, class_names=source.class_names,
        )
        col = source.image_column
        train_key = decode.split_key(source.identity, h.train_split, source.train, col)
        test_key = decode.split_key(source.identity, h.test_split, source.test, col)
        spec = decode.probe_spec(source.train, col, train_key, h.dataset)
        in_memory = (len(source.train) + len(source.test)) * spec.nbytes <= h.in_memory_limit_gb * 2**30
        # Exact (in memory) and sampled (streamed) stats share a key on purpose: whichever came first
        # is reused, so a run's normalisation never depends on in_memory_limit_gb.
        stats_key = train_key and [train_key, vars(spec), h.val_fraction, VAL_SEED]
        if in_memory:
            train_imgs = decode.load_decoded(train_key, source.train, col, spec, h.dataset, h.train_split)
            test_imgs = decode.load_decoded(test_key, source.test, col, spec, h.dataset, h.test_split)
            stats = decode.cached_json("stats", stats_key, lambda: decode.pixel_stats(train_imgs, exclude=split.val))
            train_t, test_t = torch.from_numpy(train_imgs), torch.from_numpy(test_imgs)
            lab_t, test_lab_t = torch.from_numpy(labels), torch.from_numpy(test_labels)
            train_set = InMemoryImages(train_t, lab_t, split.train, self.augment)
            val_set = InMemoryImages(train_t, lab_t, split.val)
            test_set = InMemoryImages(test_t, test_lab_t, np.arange(len(test_labels)))
        else:
            stats = decode.cached_json("stats", stats_key,
                                       lambda: self._sampled_stats(source, spec, split.val, h.dataset))
            train_set = StreamingImages(source.train, col, labels, split.train, spec, self.augment)
            val_set = StreamingImages(source.train, col, labels, split.val, spec)
            test_set = StreamingImages(source.test, col, test_labels, np.arange(len(test_labels)), spec)
        mean, std = stats["mean"], stats["std"]
        self._state = _State(source, spec, labels, split.train, split.val, mean, std, in_memory,
                             train_set, val_set, test_set)
        if in_memory:
            self._state.tensors = {torch.device("cpu"): (train_t, lab_t, test_t, test_lab_t)}
        size, chans = self.image_size, self.in_chans
        common = dict(image_size=size, in_chans=chans, mean=mean, std=std)
        self.train_transform = BatchTransform(**common, train=True, padding=h.random_crop_padding, hflip=self.hflip)
        self.eval_transform = BatchTransform(**common, train=False)

    @staticmethod
    def _sampled_stats(source: DatasetSource, spec, val: np.ndarray, name: str):
        pool = np.setdiff1d(np.arange(len(source.train)), val)
        rows = np.sort(np.random.default_rng(VAL_SEED).choice(pool, min(_STATS_SAMPLE, len(pool)), replace=False))
        raw = decode.raw_images(source.train, source.image_column).select(rows)
        # Streamed data is the large kind: 2,000 big images take a while to decode.
        with Progress(f"preparing {name}: the pixel statistics of {len(rows):,} sample images", total=len(rows)) as p:
            sample = []
            for r in raw:
                sample.append(decode.decode_one(r[source.image_column], spec))
                p.advance()
        return decode.pixel_stats(np.stack(sample))

    def train_dataloader(self):
        return self._loader("train", self._s.train_set, shuffle=True)

    def val_dataloader(self):
        return self._loader("val", self._s.val_set) if len(self._s.val_set) else []

    def test_dataloader(self):
        return self._loader("test", self._s.test_set)

    @property
    def device_resident(self) -> bool:
        """Whether batches are drawn on the device (in memory, no per-image RandAugment)."""
        return self._s.in_memory and self.augment is None

    def arrays(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """In memory: the decoded uint8 train split [N, C, H, W], its labels, the test split and its labels.

        Rows of the train split are indexed by :attr:`train_indices` and :attr:`val_indices`.
        """
        if not self._s.in_memory:
            raise VitbenchError(
                "the data is streamed (larger than data.in_memory_limit_gb): it has no in-memory arrays"
            )
        return self._s.tensors[torch.device("cpu")]

    @property
    def eval_batch_size(self) -> int:
        return max(self.hparams.batch_size, MIN_EVAL_BATCH)

    def _loader(self, split: str, dataset, shuffle: bool = False):
        h = self.hparams
        batch_size = h.batch_size if shuffle else self.eval_batch_size
        if self.device_resident:
            return self._device_batches(split, batch_size, shuffle)
        # Under DDP Lightning swaps in a DistributedSampler (use_distributed_sampler=True) that shards this.
        extra = dict(shuffle=True, generator=torch.Generator().manual_seed(h.seed)) if shuffle else {}
        drop_last = shuffle and h.drop_last and len(dataset) >= batch_size
        return DataLoader(
            dataset, batch_size=batch_size, num_workers=h.num_workers, collate_fn=collate, drop_last=drop_last,
            persistent_workers=h.num_workers > 0, pin_memory=torch.cuda.is_available(), **extra,
        )

    def _device_batches(self, split: str, batch_size: int, shuffle: bool) -> DeviceBatches:
        s, trainer = self._s, self.trainer
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        if device not in s.tensors:  # once per device, not per step
            s.tensors[device] = tuple(t.to(device) for t in s.tensors[torch.device("cpu")])
        train_t, lab_t, test_t, test_lab_t = s.tensors[device]
        images, labels, rows = {
            "train": (train_t, lab_t, s.train_indices),
            "val": (train_t, lab_t, s.val_indices),
            "test": (test_t, test_lab_t, np.arange(len(test_t))),
        }[split]
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        # Training batches the trainer has used this epoch: what a mid-epoch checkpoint must resume after.
        consumed = ((lambda: trainer.fit_loop.epoch_loop.batch_progress.current.processed)
                    if shuffle and trainer is not None else None)
        batches = DeviceBatches(
            images, labels, rows, batch_size, shuffle=shuffle, seed=self.hparams.seed,
            drop_last=shuffle and self.hparams.drop_last,
            epoch=lambda: trainer.current_epoch if trainer is not None else 0, rank=rank, world_size=world,
            consumed=consumed,
        )
        if split == "train":
            self._train_batches = batches
            if self._resume_train:
                batches.load_state_dict(self._resume_train)  # applies to the pass of the checkpoint's epoch only
        return batches

    # -- resuming mid-epoch ---------------------------------------------------------------
    # Lightning saves a stateful loader's position itself, but restores it only into a loader it
    # creates after the checkpoint's loops are loaded, and vitbench's learning-rate schedule asks
    # for the number of steps (so the loader is created) before that. The datamodule's own state,
    # restored first, carries the position instead.

    def state_dict(self) -> dict:
        return {"train_batches": self._train_batches.state_dict()} if self._train_batches is not None else {}

    def load_state_dict(self, state: dict) -> None:
        self._resume_train = state.get("train_batches")
        if self._resume_train and self._train_batches is not None:  # created already, not iterated yet
            self._train_batches.load_state_dict(self._resume_train)

    def teardown(self, stage: str) -> None:
        if stage == "fit":
            self._resume_train = None  # a later fit of this datamodule starts its own passes

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, labels = batch
        training = self.trainer is not None and self.trainer.training
        if self.train_transform is None:
            self.setup()
        transform = self.train_transform if training else self.eval_transform
        return transform(images), labels

    # -- what the rest of vitbench reads --------------------------------------------------

    @property
    def _s(self) -> _State:
        if self._state is None:
            self.setup()
        return self._state

    num_classes = property(lambda self: self._s.source.num_classes)
    class_names = property(lambda self: list(self._s.source.class_names))
    train_indices = property(lambda self: self._s.train_indices)
    val_indices = property(lambda self: self._s.val_indices)
    n_train = property(lambda self: len(self._s.train_indices))
    n_val = property(lambda self: len(self._s.val_indices))
    n_test = property(lambda self: len(self._s.source.test))
    n_source_train = property(lambda self: len(self._s.source.train))
    native_chans = property(lambda self: self._s.spec.chans)
    mean = property(lambda self: list(self._s.mean))
    std = property(lambda self: list(self._s.std))
    in_memory = property(lambda self: self._s.in_memory)

    @property
    def native_image_size(self) -> int:
        """Side of the square the data is resized to by default (the longer side if not square)."""
        return max(self._s.spec.height, self._s.spec.width)

    @property
    def image_size(self) -> int:
        return self.hparams.image_size or self.native_image_size

    @property
    def in_chans(self) -> int:
        return self.hparams.in_chans or self.native_chans

    @property
    def class_counts(self) -> dict[str, int]:
        counts = Counter(self._s.labels[self._s.train_indices].tolist())
        return {name: counts.get(i, 0) for i, name in enumerate(self.class_names)}

    def describe(self) -> dict:
        s, h = self._s, self.hparams
        return {
            "dataset": h.dataset,
            "n_train": self.n_train,
            "n_val": self.n_val,
            "n_test": self.n_test,
            "num_classes": self.num_classes,
            "class_names": self.class_names,
            "class_counts": self.class_counts,
            "image_shape": [s.spec.chans, s.spec.height, s.spec.width],
            "mean": self.mean,
            "std": self.std,
            "fraction": h.fraction,
            "samples_per_class": h.samples_per_class,
            "seed": h.seed,
        }
