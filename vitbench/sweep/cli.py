"""``vitbench sweep``: plan, run (locally), submit (SLURM), status and resume a sweep."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from vitbench.errors import VitbenchError

if TYPE_CHECKING:
    from vitbench.sweep.plan import Task
    from vitbench.sweep.sweepdir import SweepPlan, TaskState


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="run an experiment: backbones x data fractions x seeds",
                       description="Plan an experiment file into a sweep dir, run it locally or on SLURM, "
                                   "follow and resume it.")
    s = p.add_subparsers(dest="sweep_command", metavar="SUBCOMMAND", required=True)

    q = s.add_parser("plan", help="validate an experiment and list its tasks (writes the sweep dir)")
    q.add_argument("experiment", metavar="EXP", help="experiment YAML file, e.g. experiments/smoke.yaml")
    q.add_argument("--sweep-dir", help="default sweeps/NAME")
    q.add_argument("--json", action="store_true", help="print sweep.json (tasks with resolved configs)")
    q.add_argument("--estimate", action="store_true",
                   help="also time a few training steps of each backbone here and print each run's and the sweep's "
                        "expected wall time")
    q.set_defaults(func=cmd_plan)

    q = s.add_parser("run", help="run every task on this machine, N at a time")
    q.add_argument("experiment", metavar="EXP")
    q.add_argument("--sweep-dir", help="default sweeps/NAME")
    _add_parallel(q)
    q.set_defaults(func=cmd_run)

    q = s.add_parser("submit", help="submit the sweep to SLURM as job arrays")
    q.add_argument("experiment", metavar="EXP")
    q.add_argument("--profile", required=True, help="cluster profile: NAME (slurm/NAME.yaml) or a path")
    q.add_argument("--sweep-dir", help="default sweeps/NAME")
    q.add_argument("--dry-run", action="store_true",
                   help="print the batch script and the sbatch commands; submit nothing")
    q.set_defaults(func=cmd_submit)

    q = s.add_parser("status", help="done / running / pending / failed / not started, per task")
    q.add_argument("sweep_dir", metavar="SWEEP_DIR")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_status)

    q = s.add_parser("resume", help="rerun the unfinished tasks the way the sweep was run")
    q.add_argument("sweep_dir", metavar="SWEEP_DIR")
    _add_parallel(q, "local sweeps: ")
    q.set_defaults(func=cmd_resume)

    q = s.add_parser("run-task", help="internal: run one task (used by `sweep run` and the sbatch script)")
    q.add_argument("sweep_dir", metavar="SWEEP_DIR")
    q.add_argument("task_id", nargs="?", type=int)
    q.add_argument("--group")
    q.add_argument("--array-index", type=int)
    q.add_argument("--slot", type=int, default=0, help="the task's slot in the pack (resources.runs_per_device)")
    q.set_defaults(func=cmd_run_task)


def _add_parallel(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """--parallel: the experiment's ``local.parallel``, for this run; its help is that key's."""
    from vitbench.sweep.experiment import LocalSpec

    meaning = LocalSpec.__dataclass_fields__["parallel"].metadata["help"]
    parser.add_argument("--parallel", type=int, metavar="N",
                        help=f"{prefix}{meaning} (default: the experiment's local.parallel)")


# ---------------------------------------------------------------------- helpers

def _parallel(args) -> int | None:
    """--parallel, checked as the experiment's ``local.parallel`` is; None if not given."""
    from vitbench.config import check_value
    from vitbench.sweep.experiment import LocalSpec

    return None if args.parallel is None else check_value(LocalSpec, "parallel", args.parallel, "--parallel")


def packing_line(tasks: Sequence[Task], k: int) -> str | None:
    """How the tasks are packed into array elements ('12 tasks in 6 array elements of up to 2 ...').

    None if they are not packed.
    """
    if k == 1:
        return None
    groups: dict[str, list[Task]] = {}
    for t in tasks:
        groups.setdefault(t.group, []).append(t)
    elements = {g: len({t.array_index for t in ts}) for g, ts in groups.items()}
    parts = [f"{g} {len(ts)} in {elements[g]}" + ("" if g == "main" else ", element i after main element i")
             for g, ts in groups.items()]
    return (f"packed: {len(tasks)} tasks in {sum(elements.values())} array elements of up to {k} "
            f"(runs_per_device {k}; {'; '.join(parts)})")


def _print_plan(plan: SweepPlan) -> None:
    tasks = plan.tasks
    packed = plan.runs_per_device > 1
    print(f"sweep '{plan.name}': {len(tasks)} task(s) in {plan.sweep_dir}")
    if packed:
        print(packing_line(tasks, plan.runs_per_device))
    pack = f" {'pack.slot':>9}" if packed else ""
    print(f"{'id':>3}  {'label':<14} {'backbone':<14} {'preset':<7} {'size':>9} {'seed':>4}{pack}  teacher")
    for t in tasks:
        teacher = tasks[t.teacher].name if t.teacher is not None else "-"
        pack = f" {f'{t.array_index}.{t.slot}':>9}" if packed else ""
        print(f"{t.id:>3}  {t.label:<14} {t.backbone:<14} {t.preset:<7} {str(t.size):>9} {t.seed:>4}{pack}  {teacher}")


def _write_report(sweep_dir: Path) -> None:
    from vitbench.report import write_report

    try:
        path = write_report(sweep_dir)
    except VitbenchError as e:  # the sweep itself ran; say why there is no report
        print(f"report: not written ({e})", file=sys.stderr)
        return
    print(f"report: {path}")


def _corrupt_line(sweep_dir: Path, corrupt: list[TaskState]) -> str:
    from vitbench.rundir import results_path

    example = results_path(corrupt[0].task.run_dir)
    return (f"{len(corrupt)} task(s) have a results.json that does not read, e.g. {example}: "
            f"restore it, or delete it so that `vitbench sweep resume {sweep_dir}` finishes that run again")


def _unfinished(plan: SweepPlan) -> tuple[list[int], dict[int, TaskState]]:
    from vitbench.sweep.sweepdir import task_states

    states = {s.task.id: s for s in task_states(plan)}
    corrupt = [s for s in states.values() if s.state == "corrupt"]
    if corrupt:
        raise VitbenchError(_corrupt_line(plan.sweep_dir, corrupt))
    if any(s.state == "unknown" for s in states.values()):
        raise VitbenchError(
            "squeue did not answer, so submitted tasks may still be queued: run this where squeue works "
            "(the cluster's login node) so that no task is submitted twice"
        )
    return [i for i, s in states.items() if s.state in ("failed", "not started")], states


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
        plan = plan_sweep(exp, text, args.sweep_dir, write=False)
        estimate = estimate_sweep(exp, plan.sweep_dir, out=sys.stderr)
    plan = plan_sweep(exp, text, args.sweep_dir)
    if args.json:
        print(json.dumps(plan.to_dict(), indent=2))
    else:
        _print_plan(plan)
    if estimate is not None:
        from vitbench.sweep.estimate import estimate_lines

        print("\n".join(estimate_lines(estimate)))
    return 0


def _run_tasks_locally(plan: SweepPlan, ids: list[int], parallel: int) -> int:
    import time

    from vitbench.sweep.local import run_local

    k = plan.runs_per_device
    if k > 1:  # each of the `parallel` slots runs its runs_per_device tasks at once
        print(f"{parallel} slot(s) x runs_per_device {k}: up to {parallel * k} tasks at a time")
    t0 = time.monotonic()
    done, failed = run_local(plan, ids, parallel * k)
    secs = time.monotonic() - t0
    print(f"sweep '{plan.name}': {len(done)} done, {len(failed)} failed of {len(ids)} in {secs:.0f}s "
          f"({plan.sweep_dir})")
    _write_report(plan.sweep_dir)
    if failed:
        print(f"failed: {', '.join(plan.tasks[i].name for i in failed)}; see {plan.sweep_dir}/logs/; "
              f"rerun them with `vitbench sweep resume {plan.sweep_dir}`", file=sys.stderr)
        return 1
    return 0


def cmd_run(args) -> int:
    from vitbench.sweep.experiment import load_experiment
    from vitbench.sweep.sweepdir import plan_sweep

    parallel = _parallel(args)  # a bad --parallel is refused before the experiment is read
    exp, text = load_experiment(args.experiment)
    plan = plan_sweep(exp, text, args.sweep_dir)
    _, states = _unfinished(plan)
    busy = [i for i, s in states.items() if s.state in ("running", "pending")]
    if busy:
        print(f"{len(busy)} task(s) are already running or queued; leaving them alone")
    ids = [i for i in states if i not in busy]
    return _run_tasks_locally(plan, ids, parallel or exp.local.parallel)


def cmd_submit(args) -> int:
    from vitbench.sweep import slurm
    from vitbench.sweep.experiment import load_experiment
    from vitbench.sweep.sweepdir import SWEEP_JSON, default_sweep_dir, plan_sweep

    exp, text = load_experiment(args.experiment)
    prof = slurm.load_profile(args.profile)
    slurm.check_resources(exp, prof)
    sweep_dir = Path(args.sweep_dir or default_sweep_dir(exp)).resolve()
    script_text = slurm.render_script(exp, prof, sweep_dir)
    if args.dry_run:
        plan = plan_sweep(exp, text, sweep_dir, write=False)  # same checks as a real submission
        ids = [t.id for t in plan.tasks]
        subs = slurm.plan_submissions(plan.tasks, ids, slurm.teacher_jobs(plan.tasks, ids, {}))
        print(f"# {sweep_dir}/sweep.sbatch\n{script_text}")
        packing = packing_line(plan.tasks, exp.resources.runs_per_device)
        if packing:
            print(f"# {packing}")
        print("# sbatch commands (dry run: nothing submitted)")
        for line in slurm.dry_run_lines(subs, sweep_dir / "sweep.sbatch", prof.max_concurrent):
            print(line)
        return 0
    slurm.find_sbatch()
    created = not (sweep_dir / SWEEP_JSON).is_file() and not sweep_dir.exists()
    plan = plan_sweep(exp, text, sweep_dir)
    try:
        from vitbench.utils import write_text

        write_text(sweep_dir / "sweep.sbatch", script_text)
        ids, states = _unfinished(plan)
        if not ids:
            print(f"sweep '{exp.name}': nothing to submit (every task is done, running or queued); "
                  f"see `vitbench sweep status {sweep_dir}`")
            return 0
        slurm.submit(plan, ids, states, prof)
    except BaseException:
        from vitbench.sweep.sweepdir import load_jobs

        if created and not load_jobs(sweep_dir).get("submissions"):
            shutil.rmtree(sweep_dir, ignore_errors=True)  # nothing was submitted: leave nothing behind
        raise
    print(f"follow it with `vitbench sweep status {sweep_dir}`")
    return 0


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

    plan = load_sweep(args.sweep_dir)
    states = task_states(plan)
    if args.json:
        print(json.dumps([s.to_dict() for s in states], indent=2))
        return 0
    mode = load_jobs(plan.sweep_dir).get("mode") or "not run yet"
    print(f"sweep '{plan.name}' ({mode}): {plan.sweep_dir}")
    for s in states:
        state = "done*" if s.converged is False else s.state
        print(f"{s.task.id:>3}  {s.task.name:<28} {state:<12} {s.job or ''}")
    counts = {name: sum(s.state == name for s in states) for name in STATES}
    print("  ".join(f"{name}: {n}" for name, n in counts.items() if n) + f"  (of {len(states)})")
    unconverged = [s.task.id for s in states if s.converged is False]
    if unconverged:
        from vitbench.training.convergence import RULE

        print(f"* not converged: {len(unconverged)} of {counts['done']} done runs ({RULE}): their accuracy "
              f"understates the backbone; give them a larger budget: tasks {_id_ranges(unconverged)}")
    corrupt = [s for s in states if s.state == "corrupt"]
    if corrupt:
        print(f"corrupt: {_corrupt_line(plan.sweep_dir, corrupt)}")
    return 0


def cmd_resume(args) -> int:
    from vitbench.sweep import slurm
    from vitbench.sweep.sweepdir import load_jobs, load_sweep, load_sweep_experiment

    plan = load_sweep(args.sweep_dir)
    jobs = load_jobs(plan.sweep_dir)
    mode = jobs.get("mode")
    if mode is None:
        raise VitbenchError(f"sweep {plan.sweep_dir} was never run: start it with `vitbench sweep run EXP` "
                            "or `vitbench sweep submit EXP --profile NAME`")
    ids, states = _unfinished(plan)
    if not ids:
        print(f"sweep '{plan.name}': nothing to resume (every task is done, running or queued)")
        return 0
    # All checked before anything is said or run.
    exp = load_sweep_experiment(plan.sweep_dir) if mode == "local" else None
    parallel = _parallel(args)
    _check_overrides(plan, ids)
    print(f"resuming {len(ids)} task(s): {', '.join(plan.tasks[i].name for i in ids)}")
    if exp is not None:
        return _run_tasks_locally(plan, ids, parallel or exp.local.parallel)
    slurm.find_sbatch()
    last = [s for s in jobs["submissions"] if s.get("profile")]
    prof = slurm.load_profile(last[-1]["profile"]) if last else slurm.Profile()
    slurm.submit(plan, ids, states, prof)
    return 0


def _check_overrides(plan: SweepPlan, ids: list[int]) -> None:
    """The backbone overrides of tasks ``ids``, checked against their backbones before any is started.

    Loading a sweep checks only the config schema (it never imports plugins, and status stays
    fast); a resume is about to import them anyway, in every task it starts.
    """
    todo = [plan.tasks[i] for i in ids if (plan.tasks[i].config.get("model") or {}).get("overrides")]
    if not todo:
        return
    from vitbench.backbones import get_backbone, load_plugins

    for t in todo:
        try:
            load_plugins(t.config.get("plugins") or [])
            get_backbone(t.backbone).check_overrides(t.config["model"]["overrides"])
        except VitbenchError as e:
            raise VitbenchError(f"{plan.sweep_dir / 'sweep.json'}: task {t.id} ({t.name}): {e}") from None


def cmd_run_task(args) -> int:
    from vitbench.sweep.task import run_task

    if args.task_id is None and (args.group is None or args.array_index is None):
        raise VitbenchError("run-task needs TASK_ID, or --group G --array-index I [--slot J]")
    run_task(args.sweep_dir, args.task_id, args.group, args.array_index, args.slot)
    return 0
