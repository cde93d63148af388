import os
import tempfile

import pytest

try:  # tests/ is on sys.path (rootdir conftest, no tests/__init__.py)
    import slurm_cluster as _slurm
except ImportError:  # tests/ is a package
    from tests import slurm_cluster as _slurm


def pytest_collection_modifyitems(items):
    """Every test that uses the ``slurm_cluster`` fixture carries the ``slurm`` marker."""
    for item in items:
        if "slurm_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slurm)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A private single-node SLURM cluster (slurm/test-cluster.sh) for the session.

    Yields ``{"SLURM_CONF": path, "dir": path, "port": int, "env": dict}``;
    pass ``env`` to every sbatch/srun/squeue/scontrol subprocess. Skipped when
    SLURM/munge are not installed, except under CI=true, where that fails.
    The cluster is always stopped at teardown; its logs stay in ``dir``/log.
    """
    unavailable = _slurm.unavailable_reason()
    if unavailable:
        reason = f"SLURM test cluster unavailable, {unavailable}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason + " [CI=true: refusing to skip]")
        pytest.skip(reason)

    cluster_dir = tmp_path_factory.mktemp("slurm")
    own_short_dir = None
    if len(str(cluster_dir)) > _slurm._MAX_DIR_LEN:  # munge socket path limit
        own_short_dir = cluster_dir = tempfile.mkdtemp(prefix="vitbench-slurm-")
    try:
        info = _slurm.start_cluster(cluster_dir)
    except Exception:
        _slurm.stop_cluster(cluster_dir, check=False)
        raise
    try:
        yield info
    finally:
        _slurm.stop_cluster(cluster_dir, purge=own_short_dir is not None)


# ---- vitbench.data (tests/test_data*.py) ----------------------------------------------------------
# Offline flags are read by `datasets`/`huggingface_hub` when first imported, so they are set here,
# at conftest import, before any test module imports them; subprocesses inherit them.
for _key, _value in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}.items():
    os.environ.setdefault(_key, _value)


@pytest.fixture(scope="session", autouse=True)
def vitbench_cache(tmp_path_factory):
    """One VITBENCH_CACHE for the whole session (the Fashion-MNIST Arrow cache takes seconds to build);
    a VITBENCH_CACHE set by the user is kept, so repeated local runs can reuse it."""
    if not os.environ.get("VITBENCH_CACHE"):
        os.environ["VITBENCH_CACHE"] = str(tmp_path_factory.mktemp("vitbench-cache"))
    return os.environ["VITBENCH_CACHE"]
# ---- end vitbench.data ----------------------------------------------------------------------------


# ---- a tiny copy of the real Fashion-MNIST, shared by the training, sweep, report and analysis tests ----

@pytest.fixture(scope="session")
def tiny_fashion_mnist(tmp_path_factory):
    """Real Fashion-MNIST images, few of them: a ``save_to_disk`` folder usable as ``dataset:``.

    40 train and 20 test images per class (400/200), so that every epoch,
    validation and test pass takes a fraction of a second and a sweep task is
    dominated by process start-up. Same schema as the built-in dataset.
    """
    import numpy as np
    from datasets import DatasetDict

    from vitbench.data.fashion_mnist import load_fashion_mnist

    full = load_fashion_mnist()
    parts = {}
    for split, per_class in (("train", 40), ("test", 20)):
        labels = np.asarray(full[split]["label"])
        keep = np.sort(np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(10)]))
        parts[split] = full[split].select(keep.tolist()).flatten_indices()
    path = tmp_path_factory.mktemp("data") / "fashion_mnist_tiny"
    DatasetDict(parts).save_to_disk(str(path))
    return str(path)

