"""Start and stop the single-node SLURM test cluster (``slurm/test-cluster.sh``).

Used by the session-scoped ``slurm_cluster`` fixture in ``tests/conftest.py``;
also usable on its own::

    info = start_cluster("/tmp/my-slurm")            # returns a dict
    subprocess.run(["sbatch", ...], env=info["env"])
    stop_cluster("/tmp/my-slurm")

The cluster has no accounting daemon, so ``sacct`` does not work: use
``squeue`` while a job is pending/running and ``scontrol show job`` for
``MinJobAge`` (60 s) after it finished (see ``job_records``).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "slurm" / "test-cluster.sh"

# Client commands the tests use plus the daemons the script starts.
REQUIRED_BINARIES = (
    "sbatch", "srun", "squeue", "sinfo", "scontrol", "scancel",
    "slurmctld", "slurmd", "munged",
)
# Daemons are in sbin, which is not on every user's PATH.
_SEARCH_PATH = os.pathsep.join(
    [os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/local/sbin"]
)
_EXPORT_RE = re.compile(r"^export SLURM_CONF=(\S+)\s*$")
# Environment a pytest run inside a SLURM job (or an sbatch'd CI runner)
# inherits; passed on, it would make sbatch/srun talk about the outer job.
_OUTER_PREFIXES = ("SLURM_", "SBATCH_", "SALLOC_", "SRUN_", "SQUEUE_", "SINFO_")
# munge appends ".lock" to DIR/munge.socket; unix sockets allow 108 bytes.
_MAX_DIR_LEN = 80


def missing_binaries() -> list[str]:
    """Names of REQUIRED_BINARIES that are not installed."""
    return [b for b in REQUIRED_BINARIES if shutil.which(b, path=_SEARCH_PATH) is None]


def unavailable_reason() -> str | None:
    """Why the test cluster cannot be started here, or None if it can."""
    missing = missing_binaries()
    if missing:
        return (f"not installed: {', '.join(missing)} "
                "(apt-get install slurm-wlm munge)")
    if os.geteuid() != 0:
        return "slurm/test-cluster.sh must run as root (slurmd launches the jobs)"
    return None


def _port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port_pair(lo: int = 20000, hi: int = 32000, tries: int = 200) -> int:
    """A port P such that P and P+1 are free on 127.0.0.1.

    Drawn at random below the Linux ephemeral range (32768+) so that
    concurrent test sessions rarely pick the same pair and outgoing
    connections do not grab it between the check and slurmctld's bind.
    """
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    for _ in range(tries):
        port = rng.randrange(lo, hi - 1)
        if _port_free(port) and _port_free(port + 1):
            return port
    raise RuntimeError(f"no free port pair in {lo}..{hi} after {tries} tries")


def client_env(slurm_conf: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """os.environ (or ``base``) without inherited SLURM_* job variables, plus SLURM_CONF."""
    env = {
        k: v
        for k, v in (os.environ if base is None else base).items()
        if not k.startswith(_OUTER_PREFIXES)
    }
    env["SLURM_CONF"] = slurm_conf
    env["PATH"] = os.pathsep.join([env.get("PATH", ""), "/usr/sbin", "/sbin"])
    return env


def start_cluster(tmp_dir: str | os.PathLike, port: int | None = None,
                  attempts: int = 3, timeout: float = 120) -> dict:
    """Run ``test-cluster.sh up tmp_dir`` and describe the cluster.

    Returns ``{"SLURM_CONF": ..., "dir": ..., "port": ..., "env": {...}}``
    where ``env`` is the environment to pass to sbatch/srun/squeue
    subprocesses. With ``port=None`` a free port pair is chosen and, if
    slurmctld still loses a race for it, up to ``attempts`` pairs are tried.
    Raises RuntimeError (with the script's stderr) if the cluster does not
    come up.
    """
    tmp_dir = Path(tmp_dir).resolve()
    if len(str(tmp_dir)) > _MAX_DIR_LEN:
        raise ValueError(f"cluster dir too long for munge's unix socket: {tmp_dir}")
    errors = []
    for _ in range(attempts if port is None else 1):
        p = port if port is not None else free_port_pair()
        env = dict(os.environ, VITBENCH_SLURM_PORT=str(p))
        proc = subprocess.run(
            ["bash", str(SCRIPT), "up", str(tmp_dir)],
            env=env, capture_output=True, text=True, timeout=timeout,
        )
        lines = proc.stdout.strip().splitlines()
        match = _EXPORT_RE.match(lines[-1]) if lines else None
        if proc.returncode == 0 and match:
            conf = match.group(1)
            return {"SLURM_CONF": conf, "dir": str(tmp_dir), "port": p,
                    "env": client_env(conf)}
        errors.append(f"port {p}: exit {proc.returncode}\n{proc.stderr.strip()}")
        if proc.returncode == 2:  # usage/prerequisite error: retrying won't help
            break
        stop_cluster(tmp_dir, check=False)
    raise RuntimeError("slurm test cluster did not start:\n" + "\n".join(errors))


def stop_cluster(tmp_dir: str | os.PathLike, purge: bool = False,
                 check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``test-cluster.sh down tmp_dir`` (keeps the logs unless ``purge``)."""
    cmd = ["bash", str(SCRIPT), "down", str(Path(tmp_dir).resolve())]
    if purge:
        cmd.append("--purge")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"test-cluster.sh down failed ({proc.returncode}):\n{proc.stderr}")
    return proc


# ---------------------------------------------------------------- job helpers

def sbatch(args: list[str], env: dict[str, str], timeout: float = 30) -> str:
    """Submit with ``sbatch --parsable``; return the job id (array: the array job id)."""
    proc = subprocess.run(["sbatch", "--parsable", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"sbatch {args} failed: {proc.stderr.strip()}")
    return proc.stdout.strip().split(";")[0]


def squeue_states(job_id: str, env: dict[str, str]) -> list[tuple[str, str, str]]:
    """(job id, state, reason) of every queued/running/completing task of ``job_id``.

    Empty once the job left the queue. squeue does not list COMPLETED jobs
    by default, and errors with "Invalid job id" once the record is purged
    (MinJobAge after the end): both mean "gone".
    """
    proc = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%i|%T|%r"], env=env,
                          capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        if "Invalid job id" in proc.stderr:
            return []
        raise RuntimeError(f"squeue -j {job_id} failed: {proc.stderr.strip()}")
    return [tuple(line.split("|", 2)) for line in proc.stdout.splitlines() if line.strip()]


def wait_gone(job_id: str, env: dict[str, str], timeout: float = 60,
              poll: float = 0.5) -> None:
    """Poll squeue until ``job_id`` (all array tasks) left the queue."""
    deadline = time.monotonic() + timeout
    while True:
        states = squeue_states(job_id, env)
        if not states:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still queued after {timeout} s: {states}")
        time.sleep(poll)


def job_records(job_id: str, env: dict[str, str]) -> list[dict[str, str]]:
    """``scontrol show job -o`` records (one per array task) as dicts.

    Available while the job is known to slurmctld, i.e. up to MinJobAge
    after it finished; there is no sacct on the test cluster.
    """
    proc = subprocess.run(["scontrol", "show", "job", "-o", job_id], env=env,
                          capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise RuntimeError(f"scontrol show job {job_id} failed: {proc.stderr.strip()}")
    records = []
    for line in proc.stdout.splitlines():
        rec = {}
        for field in line.split():
            key, sep, value = field.partition("=")
            if sep:
                rec[key] = value
        if rec:
            records.append(rec)
    return records
