"""``vitbench sweep run``: every task of a sweep on this machine, N at a time.

Each task is a subprocess (``python -m vitbench sweep run-task SWEEP_DIR ID``)
with its output in ``logs/<task>.log`` and ``cpus // N`` torch threads; a
distilled task starts once its teacher finished. ``sweep run`` passes N =
``local.parallel`` x ``resources.runs_per_device``: each slot runs that many
tasks at once, as an array element of a packed SLURM sweep does. A failed task is reported and
the others go on; the exit status says whether any failed.

SIGTERM or SIGINT (Ctrl-C) stops the sweep without orphans: no new task starts, each running
task gets the signal (it checkpoints at its next batch boundary and exits), those still running
after ``STOP_GRACE_S`` (or at a second signal) are killed, and the command exits with
``128 + signal`` and a line saying to ``vitbench sweep resume SWEEP_DIR``, which runs only the
unfinished tasks, each from its checkpoint.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from vitbench.errors import VitbenchError
from vitbench.rundir import DONE_KEYS, read_results, results_ok
from vitbench.sweep.plan import Task
from vitbench.sweep.sweepdir import SweepPlan, log_name, record_submission

STOP_GRACE_S = 60.0  # what a task gets to reach a batch boundary and save its checkpoint


@contextmanager
def _catching_stop_signals():
    """Yields a dict whose ``signal`` is the first SIGTERM/SIGINT received (None before) and ``count`` the number."""
    stop = {"signal": None, "count": 0}

    def on_signal(signum, frame):
        stop["count"] += 1
        stop["signal"] = stop["signal"] or signum

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop_tasks(running: dict, stop: dict, tasks: tuple[Task, ...], out) -> None:
    """Forward the stop signal to every running task, wait up to STOP_GRACE_S for it, then kill what is left."""
    signum = stop["signal"]
    name = signal.Signals(signum).name
    for proc, _, _ in running.values():
        if proc.poll() is None:
            proc.send_signal(signum)
    print(f"{name}: stopping {len(running)} running task(s): each saves a checkpoint at its next step "
          f"(up to {STOP_GRACE_S:.0f} s; a second {name} kills them now)", file=out, flush=True)
    deadline = time.monotonic() + STOP_GRACE_S
    while any(proc.poll() is None for proc, _, _ in running.values()):
        if stop["count"] > 1 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for tid, (proc, _, fh) in running.items():
        if proc.poll() is None:
            proc.kill()  # SIGKILL: it resumes from its last checkpoint instead
            proc.wait()
            print(f"  killed  {tasks[tid].name}", file=out, flush=True)
        else:
            saved = "checkpoint saved" if proc.returncode == 128 + signum else f"exit {proc.returncode}"
            print(f"  stopped {tasks[tid].name} ({saved})", file=out, flush=True)
        fh.close()
    running.clear()


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def run_local(plan: SweepPlan, task_ids: list[int] | None = None, parallel: int = 1,
              out=None) -> tuple[list[int], list[int]]:
    """Run ``task_ids`` (default: all) of the sweep; returns (done ids, failed ids)."""
    out = out or sys.stdout
    sweep_dir, tasks = plan.sweep_dir, plan.tasks
    todo = list(task_ids) if task_ids is not None else [t.id for t in tasks]
    total = len(todo)
    done: list[int] = []
    failed: list[int] = []
    # A results.json that does not read is not "done": its task runs, and run-task says what is wrong.
    skipped_done = [i for i in todo if results_ok(tasks[i].run_dir)]
    for i in skipped_done:
        done.append(i)
    finished = len(done)
    if skipped_done:
        print(f"[{finished}/{total}] {len(skipped_done)} task(s) already done, skipping them", file=out, flush=True)
    pending = [i for i in todo if i not in skipped_done]
    if pending:
        record_submission(sweep_dir, "local", f"local-{os.getpid()}", "local", pending, pending)
    parallel = max(1, min(parallel, len(pending) or 1))
    threads = max(1, _cpus() // parallel)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env.pop("SLURM_NTASKS", None)  # a local run is not a SLURM task, even inside an allocation
    running: dict[int, tuple[subprocess.Popen, float, object]] = {}

    outside: dict[int, bool] = {}  # teachers not part of this run: finished or not, read once

    def teacher_state(t: Task) -> str:
        tid = t.teacher
        if tid is None or tid in done:
            return "ok"
        if tid in failed:
            return "failed"
        if tid in pending or tid in running:
            return "wait"
        if tid not in outside:
            outside[tid] = bool(results_ok(tasks[tid].run_dir))
        return "ok" if outside[tid] else "failed"

    with _catching_stop_signals() as stop:
        while (pending or running) and stop["signal"] is None:
            # start what may start: a student whose teacher has finished (or failed: reported at once) first,
            # so that distillation's answer lands with its baseline's and a sweep cut short leaves few
            # teachers without students
            ready_students_first = sorted(
                pending, key=lambda i: (tasks[i].teacher is None or teacher_state(tasks[i]) == "wait", i)
            ) if len(running) < parallel else []
            for tid in ready_students_first:
                if len(running) >= parallel or stop["signal"] is not None:
                    break
                t = tasks[tid]
                ts = teacher_state(t)
                if ts == "wait":
                    continue
                pending.remove(tid)
                if ts == "failed":
                    failed.append(tid)
                    finished += 1
                    print(f"[{finished}/{total}] FAILED {t.name}: its teacher {tasks[t.teacher].name} did not finish",
                          file=out, flush=True)
                    continue
                log = sweep_dir / "logs" / f"{log_name(t)}.log"
                log.parent.mkdir(parents=True, exist_ok=True)
                fh = open(log, "a")
                cmd = [sys.executable, "-m", "vitbench", "sweep", "run-task", str(sweep_dir), str(tid)]
                proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
                running[tid] = (proc, time.monotonic(), fh)
                print(f"[{finished}/{total}] start {t.name} ({t.backbone}/{t.preset}"
                      f"{', teacher ' + tasks[t.teacher].label if t.teacher is not None else ''}) -> {log}",
                      file=out, flush=True)
            # reap
            time.sleep(0.2)
            for tid, (proc, t0, fh) in list(running.items()):
                rc = proc.poll()
                if rc is None:
                    continue
                fh.close()
                del running[tid]
                finished += 1
                t = tasks[tid]
                secs = time.monotonic() - t0
                acc, why = None, ""
                if rc == 0:
                    try:
                        acc = read_results(t.run_dir, DONE_KEYS)["test_acc"]
                    except VitbenchError as e:  # exit 0 without a results.json that reads: not done
                        why = str(e)
                if acc is not None:
                    done.append(tid)
                    print(f"[{finished}/{total}] done  {t.name}  test_acc {acc:.4f}  {secs:.1f}s", file=out, flush=True)
                else:
                    failed.append(tid)
                    log = sweep_dir / "logs" / f"{log_name(t)}.log"
                    last = why or _last_line(log)
                    print(f"[{finished}/{total}] FAILED {t.name} (exit {rc}, {secs:.1f}s): {last}  [log: {log}]",
                          file=out, flush=True)
            if not running and pending and all(teacher_state(tasks[i]) == "wait" for i in pending):
                break  # cannot happen with a valid plan; guards against a dead loop
        if stop["signal"] is not None and (running or pending):
            _stop_tasks(running, stop, tasks, out)
            n_done = sum(bool(results_ok(tasks[i].run_dir)) for i in todo)
            print(f"vitbench: interrupted by {signal.Signals(stop['signal']).name}: {n_done} of {total} task(s) done; "
                  f"finish the others with `vitbench sweep resume {sweep_dir}`", file=sys.stderr, flush=True)
            raise SystemExit(128 + stop["signal"])
    return done, failed


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    errs = [line for line in lines if line.startswith("vitbench: error:") or "Error" in line]
    return (errs[-1] if errs else lines[-1] if lines else "")[:300]
