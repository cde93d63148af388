"""``vitbench sweep``: plan, run (locally), submit (SLURM), status and resume a sweep."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from vitbench.errors import VitbenchError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="run an experiment: backbones x data fractions x seeds",
                       description="Plan an experiment file into a sweep dir, run it locally or on SLURM, follow and resume it.")
    s = p.add_subparsers(dest="sweep_command", metavar="SUBCOMMAND", required=True)

    q = s.add_parser("plan", help="validate an experiment and list its tasks (writes the sweep dir)")
    q.add_argument("experiment", metavar="EXP", help="experiment YAML file, e.g. experiments/smoke.yaml")
    q.add_argument("--sweep-dir", help="default sweeps/NAME")
    q.add_argument("--json", action="store_true", help="print sweep.json (tasks with resolved configs)")
    q.add_argument("--estimate", action="store_true",
                   help="also time a few training steps of each backbone here and print each run's and the sweep's expected wall time")
    q.set_defaults(func=cmd_plan)

    q = s.add_parser("run", help="run every task on this machine, N at a time")
    q.add_argument("experiment", metavar="EXP")
    q.add_argument("--sweep-dir", help="default sweeps/NAME")
    q.add_argument("--parallel", type=int, help="slots at a time, each running resources.runs_per_device tasks (default: the experiment's local.parallel)")
    q.set_defaults(func=cmd_run)

    q = s.add_parser("submit", help="submit the sweep to SLURM as job arrays")
    q.add_argument("experiment", metavar="EXP")
    q.add_argument("--profile", required=True, help="cluster profile: NAME (slurm/NAME.yaml) or a path")
    q.add_argument("--sweep-dir", help="default sweeps/NAME")
    q.add_argument("--dry-run", action="store_true", help="print the batch script and the sbatch commands; submit nothing")
    q.set_defaults(func=cmd_submit)

    q = s.add_parser("status", help="done / running / pending / failed / not started, per task")
    q.add_argument("sweep_dir", metavar="SWEEP_DIR")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_status)

    q = s.add_parser("resume", help="rerun the unfinished tasks the way the sweep was run")
    q.add_argument("sweep_dir", metavar="SWEEP_DIR")
    q.add_argument("--parallel", type=int, help="local sweeps: slots at a time (x resources.runs_per_device tasks)")
    q.set_defaults(func=cmd_resume)

    q = s.add_parser("run-task", help="internal: run one task (used by `sweep run` and the sbatch script)")
    q.add_argument("sweep_dir", metavar="SWEEP_DIR")
    q.add_argument("task_id", nargs="?", type=int)
    q.add_argument("--group")
    q.add_argument("--array-index", type=int)
    q.add_argument("--slot", type=int, default=0, help="the task's slot in the pack (resources.runs_per_device)")
    q.set_defaults(func=cmd_run_task)


# ---------------------------------------------------------------------- helpers

def _size(t: dict) -> str:
    return f"{t['fraction']:g}" if t.get("fraction") is not None else f"{t['samples_per_class']}/class"


def _runs_per_device(sweep: dict) -> int:
    return int(sweep.get("experiment", {}).get("resources", {}).get("runs_per_device", 1))


def packing_line(tasks: list[dict], k: int) -> str | None:
    """How the tasks are packed into array elements, e.g. '12 tasks in 6 array elements of up to 2 ...'; None if unpacked."""
    if k == 1:
        return None
    groups: dict[str, list[dict]] = {}
    for t in tasks:
        groups.setdefault(t["group"], []).append(t)
    elements = {g: len({t["array_index"] for t in ts}) for g, ts in groups.items()}
    parts = [f"{g} {len(ts)} in {elements[g]}" + ("" if g == "main" else ", element i after main element i")
             for g, ts in groups.items()]
    return (f"packed: {len(tasks)} tasks in {sum(elements.values())} array elements of up to {k} "
            f"(runs_per_device {k}; {'; '.join(parts)})")


def _print_plan(sweep_dir: Path, sweep: dict) -> None:
    tasks = sweep["tasks"]
    names = {t["id"]: t["name"] for t in tasks}
    packed = _runs_per_device(sweep) > 1
    print(f"sweep '{sweep['name']}': {len(tasks)} task(s) in {sweep_dir}")
    if packed:
        print(packing_line(tasks, _runs_per_device(sweep)))
    pack = f" {'pack.slot':>9}" if packed else ""
    print(f"{'id':>3}  {'label':<14} {'backbone':<14} {'preset':<7} {'size':>9} {'seed':>4}{pack}  teacher")
    for t in tasks:
        teacher = names[t["teacher"]] if t["teacher"] is not None else "-"
        pack = f" {str(t['array_index']) + '.' + str(t['slot']):>9}" if packed else ""
        print(f"{t['id']:>3}  {t['label']:<14} {t['backbone']:<14} {t['preset']:<7} {_size(t):>9} {t['seed']:>4}{pack}  {teacher}")


def _write_report(sweep_dir: Path) -> None:
    from vitbench.report import write_report

    try:
        path = write_report(sweep_dir)
    except VitbenchError as e:  # the sweep itself ran; say why there is no report
        print(f"report: not written ({e})", file=sys.stderr)
        return
    print(f"report: {path}")


def _corrupt_line(sweep_dir: Path, corrupt: list[dict]) -> str:
    from vitbench.rundir import results_path

    return (f"{len(corrupt)} task(s) have a results.json that does not read, e.g. {results_path(corrupt[0]['run_dir'])}: "
            f"restore it, or delete it so that `vitbench sweep resume {sweep_dir}` finishes that run again")


def _unfinished(sweep_dir: Path, sweep: dict) -> tuple[list[int], dict[int, dict]]:
    from vitbench.sweep.sweepdir import task_states

    rows = {r["task"]: r for r in task_states(sweep_dir, sweep)}
    corrupt = [r for r in rows.values() if r["state"] == "corrupt"]
    if corrupt:
        raise VitbenchError(_corrupt_line(sweep_dir, corrupt))
    if any(r["state"] == "unknown" for r in rows.values()):
        raise VitbenchError(
            "squeue did not answer, so submitted tasks may still be queued: run this where squeue works "
            "(the cluster's login node) so that no task is submitted twice"
        )
    return [i for i, r in rows.items() if r["state"] in ("failed", "not started")], rows


# --------------------------------------------------------------------- commands

def cmd_plan(args) -> int:
    from vitbench.sweep.experiment import load_experiment
    from vitbench.sweep.sweepdir import plan_sweep

    if args.estimate and args.json:
        raise VitbenchError("--estimate prints a table, --json the plan: pass one of them")
    exp, text = load_experiment(args.experiment)
    estimate = None
    if args.estimate:
        from vitbench.sweep.estimate import estimate_sweep

        # Every check first: a sweep dir that refuses this plan should not cost a minute of timing.
        sweep_dir, _ = plan_sweep(exp, text, args.sweep_dir, write=False)
        estimate = estimate_sweep(exp, sweep_dir, out=sys.stderr)
    sweep_dir, sweep = plan_sweep(exp, text, args.sweep_dir)
    if args.json:
        print(json.dumps(sweep, indent=2))
    else:
        _print_plan(sweep_dir, sweep)
    if estimate is not None:
        from vitbench.sweep.estimate import estimate_lines

        print("\n".join(estimate_lines(estimate)))
    return 0


def _run_tasks_locally(sweep_dir: Path, sweep: dict, ids: list[int], parallel: int) -> int:
    import time

    from vitbench.sweep.local import run_local

    k = _runs_per_device(sweep)
    if k > 1:  # each of the `parallel` slots runs its runs_per_device tasks at once
        print(f"{parallel} slot(s) x runs_per_device {k}: up to {parallel * k} tasks at a time")
    t0 = time.monotonic()
    done, failed = run_local(sweep_dir, sweep, ids, parallel * k)
    secs = time.monotonic() - t0
    print(f"sweep '{sweep['name']}': {len(done)} done, {len(failed)} failed of {len(ids)} in {secs:.0f}s ({sweep_dir})")
    _write_report(sweep_dir)
    if failed:
        print(f"failed: {', '.join(sweep['tasks'][i]['name'] for i in failed)}; see {sweep_dir}/logs/; "
              f"rerun them with `vitbench sweep resume {sweep_dir}`", file=sys.stderr)
        return 1
    return 0


def cmd_run(args) -> int:
    from vitbench.sweep.experiment import load_experiment
    from vitbench.sweep.sweepdir import plan_sweep

    if args.parallel is not None and args.parallel < 1:
        raise VitbenchError("--parallel must be >= 1")
    exp, text = load_experiment(args.experiment)
    sweep_dir, sweep = plan_sweep(exp, text, args.sweep_dir)
    _, rows = _unfinished(sweep_dir, sweep)
    busy = [i for i, r in rows.items() if r["state"] in ("running", "pending")]
    if busy:
        print(f"{len(busy)} task(s) are already running or queued; leaving them alone")
    ids = [i for i in rows if i not in busy]
    return _run_tasks_locally(sweep_dir, sweep, ids, args.parallel or exp.local.parallel)


def cmd_submit(args) -> int:
    from vitbench.sweep import slurm
    from vitbench.sweep.experiment import load_experiment, plan_tasks
    from vitbench.sweep.sweepdir import SWEEP_JSON, default_sweep_dir, plan_sweep

    exp, text = load_experiment(args.experiment)
    prof = slurm.load_profile(args.profile)
    slurm.check_resources(exp, prof)
    sweep_dir = Path(args.sweep_dir or default_sweep_dir(exp)).resolve()
    script_text = slurm.render_script(exp, prof, sweep_dir)
    if args.dry_run:
        plan_sweep(exp, text, sweep_dir, write=False)  # same checks as a real submission
        sweep = {"tasks": plan_tasks(exp, sweep_dir)}
        ids = [t["id"] for t in sweep["tasks"]]
        subs = slurm.plan_submissions(sweep, ids, {t["id"]: "main" for t in sweep["tasks"]})
        print(f"# {sweep_dir}/sweep.sbatch\n{script_text}")
        packing = packing_line(sweep["tasks"], exp.resources.runs_per_device)
        if packing:
            print(f"# {packing}")
        print("# sbatch commands (dry run: nothing submitted)")
        for line in slurm.dry_run_lines(subs, sweep_dir / "sweep.sbatch", prof.max_concurrent):
            print(line)
        return 0
    slurm.find_sbatch()
    created = not (sweep_dir / SWEEP_JSON).is_file() and not sweep_dir.exists()
    sweep_dir, sweep = plan_sweep(exp, text, sweep_dir)
    try:
        from vitbench.utils import write_text

        write_text(sweep_dir / "sweep.sbatch", script_text)
        ids, rows = _unfinished(sweep_dir, sweep)
        if not ids:
            print(f"sweep '{exp.name}': nothing to submit (every task is done, running or queued); "
                  f"see `vitbench sweep status {sweep_dir}`")
            return 0
        _submit_ids(sweep_dir, sweep, ids, rows, prof.max_concurrent, prof)
    except BaseException:
        from vitbench.sweep.sweepdir import load_jobs

        if created and not load_jobs(sweep_dir).get("submissions"):
            shutil.rmtree(sweep_dir, ignore_errors=True)  # nothing was submitted: leave nothing behind
        raise
    print(f"follow it with `vitbench sweep status {sweep_dir}`")
    return 0


def _submit_ids(sweep_dir, sweep, ids, rows, throttle, prof) -> None:
    from vitbench.sweep import slurm

    tasks = sweep["tasks"]
    teacher_job = {}
    for i in ids:
        tid = tasks[i]["teacher"]
        if tid is None:
            continue
        state = rows[tid]["state"]
        if state == "done":
            teacher_job[tid] = None
        elif tid in ids:
            teacher_job[tid] = "main"
        elif state in ("running", "pending") and rows[tid]["job"] and "_" in rows[tid]["job"]:
            teacher_job[tid] = rows[tid]["job"].split("_")[0]
        else:
            teacher_job[tid] = None
    subs = slurm.plan_submissions(sweep, ids, teacher_job)
    slurm.submit(sweep_dir, sweep, subs, throttle, prof)


def _id_ranges(ids: list[int]) -> str:
    """1,2,3,7 -> '1-3, 7'."""
    parts, start = [], None
    for i, tid in enumerate(ids):
        start = tid if start is None else start
        if i + 1 == len(ids) or ids[i + 1] != tid + 1:
            parts.append(str(start) if start == tid else f"{start}-{tid}")
            start = None
    return ", ".join(parts)


def cmd_status(args) -> int:
    from vitbench.sweep.sweepdir import STATES, load_jobs, load_sweep, task_states

    sweep_dir, sweep = load_sweep(args.sweep_dir)
    rows = task_states(sweep_dir, sweep)
    if args.json:
        keys = ("task", "label", "fraction", "samples_per_class", "seed", "state", "converged", "run_dir", "job")
        print(json.dumps([{k: r[k] for k in keys} for r in rows], indent=2))
        return 0
    mode = load_jobs(sweep_dir).get("mode") or "not run yet"
    print(f"sweep '{sweep['name']}' ({mode}): {sweep_dir}")
    for r in rows:
        state = "done*" if r["converged"] is False else r["state"]
        print(f"{r['task']:>3}  {r['name']:<28} {state:<12} {r['job'] or ''}")
    counts = {s: sum(r["state"] == s for r in rows) for s in STATES}
    print("  ".join(f"{s}: {n}" for s, n in counts.items() if n) + f"  (of {len(rows)})")
    unconverged = [r for r in rows if r["converged"] is False]
    if unconverged:
        from vitbench.training.convergence import RULE

        print(f"* not converged: {len(unconverged)} of {counts['done']} done runs ({RULE}): their accuracy "
              f"understates the backbone; give them a larger budget: tasks {_id_ranges([r['task'] for r in unconverged])}")
    corrupt = [r for r in rows if r["state"] == "corrupt"]
    if corrupt:
        print(f"corrupt: {_corrupt_line(sweep_dir, corrupt)}")
    return 0


def cmd_resume(args) -> int:
    from vitbench.sweep import slurm
    from vitbench.sweep.sweepdir import load_jobs, load_sweep, load_sweep_experiment

    sweep_dir, sweep = load_sweep(args.sweep_dir)
    jobs = load_jobs(sweep_dir)
    mode = jobs.get("mode")
    if mode is None:
        raise VitbenchError(f"sweep {sweep_dir} was never run: start it with `vitbench sweep run EXP` or `vitbench sweep submit EXP --profile NAME`")
    ids, rows = _unfinished(sweep_dir, sweep)
    if not ids:
        print(f"sweep '{sweep['name']}': nothing to resume (every task is done, running or queued)")
        return 0
    exp = load_sweep_experiment(sweep_dir) if mode == "local" else None  # checked before anything is said or run
    print(f"resuming {len(ids)} task(s): {', '.join(sweep['tasks'][i]['name'] for i in ids)}")
    if exp is not None:
        return _run_tasks_locally(sweep_dir, sweep, ids, args.parallel or exp.local.parallel)
    slurm.find_sbatch()
    last = [s for s in jobs["submissions"] if s.get("profile")]
    prof = slurm.load_profile(last[-1]["profile"]) if last else slurm.Profile()
    _submit_ids(sweep_dir, sweep, ids, rows, prof.max_concurrent, prof)
    return 0


def cmd_run_task(args) -> int:
    from vitbench.sweep.task import run_task

    if args.task_id is None and (args.group is None or args.array_index is None):
        raise VitbenchError("run-task needs TASK_ID, or --group G --array-index I [--slot J]")
    run_task(args.sweep_dir, args.task_id, args.group, args.array_index, args.slot)
    return 0
