import json
import os
import shutil
import tempfile
import warnings

import pytest

try:  # tests/ is on sys.path (rootdir conftest, no tests/__init__.py)
    import slurm_cluster as _slurm
except ImportError:  # tests/ is a package
    from tests import slurm_cluster as _slurm


# ---- pytest-xdist: the suite runs on every core (addopts: -n auto --dist loadgroup) ----------------
# Each worker is a pytest session of its own, so a session- or module-scoped fixture is built once per
# worker that uses it. The tests that share an expensive one run on one worker (one group), and so do
# all SLURM tests: one test cluster, started once.
XDIST_GROUPS = {
    "slurm_cluster": "slurm",
    "resnet_teacher": "resnet_teacher",  # tests/test_training.py: 4 epochs on 5% of Fashion-MNIST
    "other_classes_run": "resnet_teacher",
    "mini_sweep": "mini_sweep",  # tests/test_report.py: 10 real runs
    "known_report": "known_report",  # tests/test_report_curves.py: bootstrap fits
    "real_runs": "data_cli",  # tests/test_data_cli.py: two `vitbench data` processes
}
MAX_WORKERS = 4  # more would mostly rebuild the session fixtures: the grouped tests are the long pole
_GROUPS_DIR = "VITBENCH_TEST_GROUPS"  # where the workers tell the controller each test's group

# N workers keep N cores busy: one torch thread each (and in the processes they start), or two workers'
# OpenMP threads spin against each other on a small machine. Set here, before any test module imports torch.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    for _key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_key, "1")


def _groups(item) -> list[str]:
    fixtures = getattr(item, "fixturenames", ())
    return sorted({XDIST_GROUPS[f] for f in fixtures if f in XDIST_GROUPS})


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Every test that uses the ``slurm_cluster`` fixture carries the ``slurm`` marker; the tests of a
    fixture in ``XDIST_GROUPS`` carry its ``xdist_group``. On a pytest-xdist worker, the ``slow`` tests
    come first: the scheduler hands out the groups (the longest units) first, then single tests in this
    order, so the long ones start early and the short ones even out the workers' ends."""
    for item in items:
        if "slurm_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slurm)
        for group in _groups(item):
            item.add_marker(pytest.mark.xdist_group(group))
    if hasattr(config, "workerinput"):
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: same order on every worker


@pytest.hookimpl(tryfirst=True)
def pytest_collection_finish(session):
    """On a worker: write {test id: group} for the controller's scheduler (below). pytest-xdist's own
    loadgroup marks a test by appending ``@group`` to its id, which pytest 9.2 no longer lets it change
    (pytest-xdist issue #1386): the groups would be silently ignored.

    First, before pytest-xdist's own hook tells the controller that this worker has collected: the
    controller schedules as soon as every worker has, and a file written after that was read too late
    (the groups were then ignored at random: a session fixture built on both workers, its tests last)."""
    folder = os.environ.get(_GROUPS_DIR)
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if folder and worker:
        groups = {item.nodeid: "_".join(_groups(item)) for item in session.items if _groups(item)}
        with open(os.path.join(folder, f"{worker}.json.tmp"), "w") as f:
            json.dump(groups, f)
        os.replace(os.path.join(folder, f"{worker}.json.tmp"), os.path.join(folder, f"{worker}.json"))


def pytest_configure(config):
    if getattr(config.option, "dist", "no") == "loadgroup" and not hasattr(config, "workerinput"):
        os.environ[_GROUPS_DIR] = tempfile.mkdtemp(prefix="vitbench-test-groups-")  # the workers inherit it


def pytest_unconfigure(config):
    if not hasattr(config, "workerinput") and os.environ.get(_GROUPS_DIR, "").startswith(tempfile.gettempdir()):
        shutil.rmtree(os.environ.pop(_GROUPS_DIR), ignore_errors=True)


def pytest_xdist_make_scheduler(config, log):
    """``--dist loadgroup`` with the groups the workers wrote: each group is one unit of work, as
    pytest-xdist documents for ``xdist_group``; every other test is a unit of its own."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class FixtureGroups(LoadGroupScheduling):
        _by_test: dict | None = None

        def _split_scope(self, nodeid):
            if self._by_test is None:  # read once all workers have collected (schedule() runs then)
                self._by_test = {}
                folder = os.environ.get(_GROUPS_DIR, "")
                names = [n for n in sorted(os.listdir(folder)) if n.endswith(".json")] if os.path.isdir(folder) else []
                # Every worker wrote its file before reporting its collection: fewer means the groups broke.
                workers = len(self.nodes)
                assert len(names) == workers, f"test groups from {names}, for {workers} workers"
                for name in names:
                    with open(os.path.join(folder, name)) as f:
                        self._by_test.update(json.load(f))
            return self._by_test.get(nodeid) or super()._split_scope(nodeid)

    return FixtureGroups(config, log)


def pytest_xdist_auto_num_workers(config):
    """``-n auto``: one worker per CPU core this process may use, at most ``MAX_WORKERS``
    (``PYTEST_XDIST_AUTO_NUM_WORKERS`` overrides it; ``-n 0`` runs in this process)."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return int(os.environ["PYTEST_XDIST_AUTO_NUM_WORKERS"])
    return max(1, min(MAX_WORKERS, len(os.sched_getaffinity(0))))


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
for _key, _value in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline",
                     "WANDB_SILENT": "true"}.items():
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



# Warnings a user's `vitbench` never shows (Python hides them by default outside __main__).
HIDDEN_WARNINGS = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)


def _snapshot(root) -> dict:
    """Every path under ``root`` with a digest of its bytes (or 'dir', or a link's target: it may be /dev/zero)."""
    import hashlib

    return {p.relative_to(root).as_posix(): f"-> {os.readlink(p)}" if p.is_symlink() else "dir" if p.is_dir()
            else hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))}


@pytest.fixture
def refused(tmp_path, monkeypatch, capfd):
    """``refused(*argv, expect=[...], fresh=False)``: runs ``vitbench ARGV`` in ``tmp_path/work`` and
    asserts exit 2, exactly one stderr line (``vitbench: error: ...``) holding every ``expect``
    string, no traceback, no stdout, and no file written or changed under ``tmp_path``
    (``refused.dir``). The bad-input tables of every command family share it.

    In this process, or with ``fresh`` in a new one: `vitbench backbones` builds every registered
    backbone, and this process has registered the other tests' plugins too."""
    import subprocess
    import sys

    from vitbench.cli import main

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)

    def run(*argv, expect=(), fresh=False):
        before = _snapshot(tmp_path)
        argv = [str(a) for a in argv]
        if fresh:
            r = subprocess.run([sys.executable, "-m", "vitbench", *argv], capture_output=True, text=True, timeout=600)
            rc, out, err = r.returncode, r.stdout, r.stderr
        else:
            capfd.readouterr()
            # A warning raised meanwhile (torch's, while a checkpoint loads) counts as a stderr line, as a
            # user would see it: pytest would collect it out of sight, and Python shows each once per process.
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                rc = main(argv)
            out, err = capfd.readouterr()
            err += "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno)
                           for w in caught if not issubclass(w.category, HIDDEN_WARNINGS))
        lines = err.strip().splitlines()
        assert rc == 2, err
        assert len(lines) == 1 and lines[0].startswith("vitbench: error: "), err
        assert "Traceback" not in err + out and out == "", out
        for text in expect:
            assert text in lines[0], lines[0]
        assert _snapshot(tmp_path) == before
        return lines[0]

    run.dir = tmp_path
    return run
