"""The single-node SLURM test cluster really schedules, launches and requeues jobs.

No mocks: every test talks to the slurmctld/slurmd/munged started by the
session-scoped ``slurm_cluster`` fixture (slurm/test-cluster.sh).
"""

import subprocess
import time

import pytest

try:
    from slurm_cluster import job_records, sbatch, squeue_states, wait_gone
except ImportError:
    from tests.slurm_cluster import job_records, sbatch, squeue_states, wait_gone

pytestmark = pytest.mark.slurm


def _wait_for(predicate, timeout, what, poll=0.25):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll)


def test_sinfo_reports_node_idle(slurm_cluster):
    env = slurm_cluster["env"]

    def node_states():
        out = subprocess.run(["sinfo", "-h", "-o", "%P %a %T %D"], env=env,
                             capture_output=True, text=True, check=True, timeout=30).stdout
        return out.split()

    # Other tests of the session may still be finishing jobs: allow a few s.
    _wait_for(lambda: node_states()[2] == "idle", 15, "node idle")
    partition, avail, state, nodes = node_states()
    assert (partition, avail, state, nodes) == ("debug*", "up", "idle", "1")


def test_array_job_runs_every_task(slurm_cluster, tmp_path):
    env = slurm_cluster["env"]
    job = sbatch([
        "--array=0-2", "--job-name=vb-array",
        f"--output={tmp_path}/slurm-%A_%a.out",
        "--wrap", f'echo "$SLURM_ARRAY_TASK_ID $SLURM_ARRAY_JOB_ID" > {tmp_path}/task-$SLURM_ARRAY_TASK_ID.txt',
    ], env)
    wait_gone(job, env, timeout=60)

    for i in range(3):
        assert (tmp_path / f"task-{i}.txt").read_text().split() == [str(i), job]
    records = job_records(job, env)  # no sacct: scontrol knows it for MinJobAge
    assert sorted(r["ArrayTaskId"] for r in records) == ["0", "1", "2"]
    assert {(r["JobState"], r["ExitCode"]) for r in records} == {("COMPLETED", "0:0")}


def test_srun_launches_two_tasks(slurm_cluster, tmp_path):
    env = slurm_cluster["env"]
    script = tmp_path / "two_tasks.sh"
    script.write_text(
        "#!/bin/bash\n"
        "#SBATCH -N1 --ntasks-per-node=2 --cpus-per-task=1\n"
        f"#SBATCH --output={tmp_path}/slurm-%j.out\n"
        f"srun bash -c 'echo $SLURM_PROCID $SLURM_LOCALID $SLURM_NTASKS > {tmp_path}/rank-$SLURM_PROCID.txt'\n"
    )
    job = sbatch([str(script)], env)
    wait_gone(job, env, timeout=60)

    ranks = sorted(p.read_text().split() for p in tmp_path.glob("rank-*.txt"))
    assert ranks == [["0", "0", "2"], ["1", "1", "2"]], (tmp_path / f"slurm-{job}.out").read_text()
    (record,) = job_records(job, env)
    assert (record["JobState"], record["ExitCode"]) == ("COMPLETED", "0:0")


def test_requeue_runs_job_twice(slurm_cluster, tmp_path):
    """The Lightning flow: SIGUSR1 -> handler runs `scontrol requeue $SLURM_JOB_ID`.

    A requeued job goes back to PENDING with Reason=BeginTime (start delayed
    by cred_expire+1 = 31 s); `scontrol update JobId=.. StartTime=now`
    releases it early. Not too early: slurmd revoked the old run's credential
    (1 s granularity), and a restart in the same second as the requeue dies
    with "Job credential revoked" (state FAILED, not requeued again). Hence
    the 2 s pause below.
    """
    env = slurm_cluster["env"]
    script = tmp_path / "requeue.sh"
    script.write_text(
        "#!/bin/bash\n"
        "#SBATCH --requeue --open-mode=append\n"
        f"#SBATCH --output={tmp_path}/slurm-%j.out\n"
        f'echo "${{SLURM_RESTART_COUNT:-0}}" >> {tmp_path}/restarts.txt\n'
        'if [ "${SLURM_RESTART_COUNT:-0}" = 0 ]; then\n'
        '  trap \'echo "USR1: requeue"; scontrol requeue "$SLURM_JOB_ID"; exit 0\' USR1\n'
        f"  touch {tmp_path}/ready\n"
        "  sleep 120 & wait\n"
        "fi\n"
        'echo "second run done"\n'
    )
    job = sbatch([str(script)], env)
    _wait_for((tmp_path / "ready").exists, 20, "first run to start")
    subprocess.run(["scancel", "--batch", "--signal=USR1", job], env=env, check=True, timeout=30)

    def requeued_pending():
        # Right after `scontrol requeue` squeue can show PENDING/None (old run
        # still completing); BeginTime is set once the requeue is done.
        states = squeue_states(job, env)
        return bool(states) and states[0][1:] == ("PENDING", "BeginTime")

    _wait_for(requeued_pending, 20, "job to be requeued (PENDING, BeginTime)")
    (record,) = job_records(job, env)
    assert record["Restarts"] == "1"
    assert record["Reason"] == "BeginTime"  # delayed restart, not held
    time.sleep(2)
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"],
                   env=env, check=True, timeout=30)
    wait_gone(job, env, timeout=60)

    assert (tmp_path / "restarts.txt").read_text().split() == ["0", "1"]
    out = (tmp_path / f"slurm-{job}.out").read_text()
    assert "USR1: requeue" in out and "second run done" in out  # append mode kept both runs
    (record,) = job_records(job, env)
    assert (record["JobState"], record["ExitCode"], record["Restarts"]) == ("COMPLETED", "0:0", "1")
