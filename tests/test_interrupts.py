"""Interrupts lose nothing: real processes, real signals, the real (tiny) Fashion-MNIST.

* SIGTERM/SIGINT to ``vitbench train``: a checkpoint at the next batch boundary, a one-line
  message, a non-zero exit; the same command again resumes from it and finishes.
* SIGKILL, then the same command: every epoch's line in ``metrics.jsonl`` appears once, the lines
  written before the kill are byte-identical afterwards, and the resumed epoch has the values an
  uninterrupted run has (the data order, the augmentation and the loss sums are restored).
* SIGTERM to ``vitbench sweep run``: its ``run-task`` children stop too (no orphans), and
  ``vitbench sweep resume`` finishes only the unfinished tasks, each from its checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

# 360 training images in batches of 32: 12 steps per epoch, 180 steps; a run validates (and saves
# last.ckpt) 8 times, every 23 steps: always mid-epoch (steps 23, 46, 69, 92, ...).
EPOCHS = 15


def strict_rows(path: Path) -> list[dict]:
    """metrics.jsonl parsed as strict JSON: NaN or Infinity is a failure, not a float."""

    def reject(constant):
        raise AssertionError(f"{path}: non-standard JSON constant {constant}")

    return [json.loads(line, parse_constant=reject) for line in path.read_text().splitlines()]


def test_metrics_jsonl_writes_null_for_nan_and_infinity(tmp_path):
    """A diverging loss or a failed validation is a non-finite number: metrics.jsonl stays strict JSON
    (null), which every JSON reader parses, not Python's NaN/Infinity. The real callback in a real Trainer."""
    import lightning as L
    import torch

    from vitbench.training.callbacks import EpochMetrics

    class NonFinite(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 2)

        def training_step(self, batch, batch_idx):
            return self.layer(batch[0]).sum() * 0 + float("inf")  # a loss with a gradient, and infinite

        def validation_step(self, batch, batch_idx):
            self.log("val_acc", float("nan"))
            self.log("val_loss", float("-inf"))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    data = torch.utils.data.TensorDataset(torch.randn(8, 4), torch.zeros(8, dtype=torch.long))
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    path = tmp_path / "metrics.jsonl"
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        callbacks=[EpochMetrics(path)], default_root_dir=tmp_path)
    trainer.fit(NonFinite(), loader, loader)
    rows = strict_rows(path)
    assert [r["epoch"] for r in rows] == [0, 1]
    assert all(r["train_loss"] is None and r["val_acc"] is None and r["val_loss"] is None for r in rows), rows
    assert "NaN" not in path.read_text() and "Infinity" not in path.read_text()


def train_args(dataset: str, out: Path, epochs: int = EPOCHS) -> list[str]:
    return [sys.executable, "-m", "vitbench", "train", "--backbone", "resnet", "--preset", "micro",
            "--dataset", dataset, "--max-epochs", str(epochs), "--batch-size", "32", "--out", str(out),
            "--wandb", "disabled"]


def env_one_thread() -> dict:
    # Two runs (or a run and a sweep) at once on a small machine: one thread each keeps their speed stable.
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def wait_for(predicate, proc: subprocess.Popen, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"exited ({proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def echoed_epochs(log: Path) -> int:
    """Epoch lines a run printed (it prints one at each epoch's end, before metrics.jsonl has it)."""
    return sum(line.startswith("epoch ") for line in log.read_text().splitlines()) if log.is_file() else 0


def run_tasks(sweep_dir: Path) -> list[str]:
    """Command lines of the live `vitbench sweep run-task` processes of ``sweep_dir`` on this machine
    (tests on other pytest-xdist workers run sweeps of their own meanwhile)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        ours = {str(sweep_dir).encode(), str(sweep_dir.resolve()).encode()} & set(cmd)
        if b"run-task" in cmd and b"vitbench" in b" ".join(cmd) and ours and state != "Z":
            found.append(b" ".join(cmd).decode(errors="replace"))
    return found


def assert_resumable(checkpoint: Path) -> None:
    """A whole stop checkpoint (a second signal during its save must not cut it short) that a rerun resumes:
    it loads as weights and plain values, at the step it stopped at, with the run's rows."""
    from vitbench.rundir import load_checkpoint

    state = load_checkpoint(checkpoint)
    assert state["global_step"] > 0 and state["state_dict"] and state["optimizer_states"], checkpoint
    assert any("rows" in v for v in state["callbacks"].values() if isinstance(v, dict)), checkpoint


def assert_resumed_rows(rows: list[dict], before: str, text: str, epochs: int) -> None:
    assert [r["epoch"] for r in rows] == list(range(epochs)), [r["epoch"] for r in rows]  # each epoch once
    assert text.startswith(before), "a line written before the interrupt changed"
    assert all(r["val_acc"] is None or 0 <= r["val_acc"] <= 1 for r in rows)


@pytest.mark.slow
@pytest.mark.parametrize("sig, batch", [(signal.SIGTERM, 32), (signal.SIGINT, 360)],
                         ids=["SIGTERM mid-epoch", "SIGINT at an epoch's end"])
def test_train_stops_with_a_checkpoint_and_the_same_command_resumes(sig, batch, tiny_fashion_mnist, tmp_path):
    """With batches of 360 an epoch is one step, so the stop's checkpoint follows an epoch's last step,
    before the epoch ended: the resumed run starts the next one and still writes the stopped epoch's line."""
    out = tmp_path / "run"
    log = tmp_path / "first.out"
    epochs, steps_per_epoch = (8, 12) if batch == 32 else (40, 1)
    args = train_args(tiny_fashion_mnist, out, epochs)
    args[args.index("--batch-size") + 1] = str(batch)
    with log.open("w") as stdout:
        first = subprocess.Popen(args, stdout=stdout, stderr=subprocess.PIPE, text=True, env=env_one_thread())
        wait_for(lambda: echoed_epochs(log) >= 2, first, 300, "the second epoch")
        first.send_signal(sig)
        _, err = first.communicate(timeout=120)
    assert first.returncode == 128 + sig, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"vitbench: interrupted by {sig.name}: saved {out}/hpc_ckpt_1.ckpt") \
        and "rerun the same command" in last and "Traceback" not in err, err[-2000:]
    assert (out / "hpc_ckpt_1.ckpt").is_file() and not (out / "results.json").exists()
    assert_resumable(out / "hpc_ckpt_1.ckpt")
    before = (out / "metrics.jsonl").read_text() if (out / "metrics.jsonl").exists() else ""

    again = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env_one_thread())
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"Restored all states from the checkpoint at {out}/hpc_ckpt_1.ckpt" in again.stdout + again.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["epochs"] == epochs and results["steps"] == epochs * steps_per_epoch
    assert not list(out.glob("hpc_ckpt_*.ckpt"))  # finished: nothing left to resume
    text = (out / "metrics.jsonl").read_text()
    rows = strict_rows(out / "metrics.jsonl")
    assert_resumed_rows(rows, before, text, epochs)
    # each row holds its own epoch's steps: none merged into the next, none empty
    assert [r["step"] for r in rows] == [steps_per_epoch * (e + 1) for e in range(epochs)]
    assert all(r["train_loss"] is not None for r in rows)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGTERM to rank 0", "Ctrl-C"])
def test_ddp_train_stops_every_rank_with_one_checkpoint_and_resumes(how, tiny_fashion_mnist, tmp_path):
    """`--devices 2 --accelerator cpu` (DDP on gloo, the second rank a child process): `kill` reaches the
    first rank only, Ctrl-C both; either way both stop at the same batch, one checkpoint is saved, no
    process is left behind, and the same command resumes from it."""
    out = tmp_path / "run"
    log = tmp_path / "first.out"
    epochs = 3
    args = [*train_args(tiny_fashion_mnist, out, epochs), "--devices", "2", "--accelerator", "cpu"]
    with log.open("w") as stdout:
        first = subprocess.Popen(args, stdout=stdout, stderr=subprocess.PIPE, text=True, env=env_one_thread(),
                                 start_new_session=True)  # its own process group: both ranks, like a shell job
        wait_for(lambda: echoed_epochs(log) >= 1, first, 300, "the first epoch")
        if how == "Ctrl-C":
            os.killpg(first.pid, signal.SIGINT)
        else:
            first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=120)
    sig = signal.SIGINT if how == "Ctrl-C" else signal.SIGTERM
    assert first.returncode == 128 + sig, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"vitbench: interrupted by {sig.name}: saved {out}/hpc_ckpt_1.ckpt") \
        and "Traceback" not in err and err.count("vitbench: interrupted") == 1, err[-2000:]
    assert sorted(out.glob("hpc_ckpt_*.ckpt")) == [out / "hpc_ckpt_1.ckpt"] and not (out / "results.json").exists()
    with pytest.raises(ProcessLookupError):  # the second rank ended too: no process of the group is left
        os.killpg(first.pid, 0)
    if how == "Ctrl-C":  # the same one checkpoint as after SIGTERM, which the same command resumes below
        assert_resumable(out / "hpc_ckpt_1.ckpt")
        return

    again = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env_one_thread())
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"Restored all states from the checkpoint at {out}/hpc_ckpt_1.ckpt" in again.stdout + again.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["epochs"] == epochs and results["world_size"] == 2
    assert [r["epoch"] for r in strict_rows(out / "metrics.jsonl")] == list(range(epochs))


@pytest.mark.slow
def test_sigkill_then_rerun_keeps_every_epoch_record_exact(tiny_fashion_mnist, tmp_path):
    """The run killed without warning resumes from last.ckpt (mid-epoch) and ends with the very rows
    an uninterrupted run writes, apart from timing: lines are never rewritten, and the epoch split
    by the kill has the same train loss, validation and learning rate."""
    reference = tmp_path / "reference"
    out = tmp_path / "killed"
    ref = subprocess.Popen(train_args(tiny_fashion_mnist, reference), stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True, env=env_one_thread())
    metrics = out / "metrics.jsonl"
    first = subprocess.Popen(train_args(tiny_fashion_mnist, out), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=env_one_thread())
    # A line appears once a checkpoint covers its epoch: the 7th (epoch 6) right after step 92's
    # checkpoint, in the middle of epoch 7 (its 8th step); killed then, the run resumes from there.
    wait_for(lambda: metrics.is_file() and len(metrics.read_text().splitlines()) >= 7, first, 300, "seven lines")
    first.kill()
    first.wait()
    before = metrics.read_text()
    assert not (out / "results.json").exists() and before.endswith("\n")

    again = subprocess.run(train_args(tiny_fashion_mnist, out), capture_output=True, text=True, timeout=600,
                           env=env_one_thread())
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Restored all states from the checkpoint" in again.stdout + again.stderr
    text = metrics.read_text()
    rows = strict_rows(metrics)
    assert_resumed_rows(rows, before, text, EPOCHS)

    _, err = ref.communicate(timeout=600)
    assert ref.returncode == 0, err[-3000:]
    timing = ("time", "images_per_s")
    expected = [{k: v for k, v in r.items() if k not in timing} for r in strict_rows(reference / "metrics.jsonl")]
    assert [{k: v for k, v in r.items() if k not in timing} for r in rows] == expected
    ours, theirs = (json.loads((d / "results.json").read_text()) for d in (out, reference))
    assert ours["test_acc"] == theirs["test_acc"] and ours["best_val_acc"] == theirs["best_val_acc"]



@pytest.mark.slow
def test_a_run_killed_while_testing_reruns_to_the_results_and_lines_it_had(tiny_fashion_mnist, tmp_path):
    """A step budget validates (and saves last.ckpt) at its last step, as every `budget.cycles` run does:
    killed after it, while testing, the run has no step left when the same command restores that
    checkpoint. It tests, and writes the results and the very lines the run wrote unstopped."""
    from vitbench.cli import main

    out = tmp_path / "run"
    args = [str(a) for a in train_args(tiny_fashion_mnist, out)[3:]]
    # 28 steps (2 1/3 epochs) validate every 4: the last validation, and last.ckpt, at the last step
    args[args.index("--max-epochs"):args.index("--max-epochs") + 2] = ["--max-steps", "28"]
    assert main(args) == 0
    finished, results = (out / "metrics.jsonl").read_text(), json.loads((out / "results.json").read_text())
    (out / "results.json").unlink()  # what a kill while testing leaves: every other file as it is now
    assert main(args) == 0
    assert (out / "metrics.jsonl").read_text() == finished
    again = json.loads((out / "results.json").read_text())
    kept = ("epochs", "steps", "test_acc", "best_val_acc", "val_history", "converged", "images_per_s")
    assert {k: again[k] for k in kept} == {k: results[k] for k in kept}
    assert again["epochs"] == 3 and again["steps"] == 28 and again["val_history"][-1][0] == 28


@pytest.mark.slow
@pytest.mark.parametrize("at", [3, 4, 28], ids=["between validations", "at a validation", "at the last step"])
def test_a_preempted_packed_run_saves_after_its_validation_and_resumes_with_every_one(at, tiny_fashion_mnist,
                                                                                     tmp_path, monkeypatch):
    """A packed job's run (`VITBENCH_REQUEUE=batch`) preempted by SIGUSR1 saves its requeue checkpoint at
    a batch end and exits 75 for the batch script to requeue. SIGUSR1 during a step that validates waits
    one step: saved before that validation, the resumed run would skip it, and best.ckpt might be
    another. The rerun (what the requeued job does) resumes and validates where an unstopped run does.
    At the last step there is no next one: the run tests and finishes, leaving nothing to requeue."""
    import lightning as L

    from vitbench.cli import main
    from vitbench.rundir import load_checkpoint
    from vitbench.training import requeue

    class Preempt(L.Callback):  # SLURM's SIGUSR1, delivered at the end of step `at`
        def on_train_batch_end(self, trainer, *args) -> None:
            if trainer.global_step == at:
                os.kill(os.getpid(), signal.SIGUSR1)

    real = requeue.trainer_kwargs
    monkeypatch.setattr(requeue, "trainer_kwargs", lambda callbacks, stop=False: real([Preempt(), *callbacks], stop))
    monkeypatch.setenv(requeue.ENV, "batch")
    monkeypatch.setattr(requeue, "_signalled", False)
    previous = signal.getsignal(signal.SIGUSR1)
    out = tmp_path / "run"
    args = [str(a) for a in train_args(tiny_fashion_mnist, out)[3:]]
    # 28 steps (2 1/3 epochs) validate every 4
    args[args.index("--max-epochs"):args.index("--max-epochs") + 2] = ["--max-steps", "28"]
    try:
        if at == 28:
            assert main(args) == 0
        else:
            with pytest.raises(SystemExit) as stopped:
                main(args)
            assert stopped.value.code == requeue.REQUEUE_EXIT
            assert load_checkpoint(out / "hpc_ckpt_1.ckpt")["global_step"] == (3 if at == 3 else 5)
            requeue._signalled = False  # the requeued job is a new process
            monkeypatch.setattr(requeue, "trainer_kwargs", real)
            assert main(args) == 0
    finally:
        signal.signal(signal.SIGUSR1, previous)
    results = json.loads((out / "results.json").read_text())
    assert [step for step, _ in results["val_history"]] == list(range(4, 29, 4)), results["val_history"]
    assert results["steps"] == 28 and not list(out.glob("hpc_ckpt_*.ckpt"))


SWEEP_EPOCHS = 6


def sweep_experiment(tmp_path: Path, dataset: str) -> Path:
    exp = {
        "name": "stop", "dataset": dataset, "fractions": [1.0], "seeds": [0, 1, 2],
        "budget": {"max_epochs": SWEEP_EPOCHS}, "backbones": [{"name": "resnet", "preset": "micro"}],
        "train": {"data": {"batch_size": 32}}, "resources": {"accelerator": "cpu"},
        "wandb": {"mode": "disabled"}, "local": {"parallel": 2},
    }
    path = tmp_path / "stop.yaml"
    path.write_text(yaml.safe_dump(exp, sort_keys=False))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGTERM", "Ctrl-C"])
def test_sweep_run_stops_its_tasks_and_resume_finishes_only_the_rest(how, tiny_fashion_mnist, tmp_path):
    """``kill`` reaches `sweep run` alone: it forwards the signal. Ctrl-C reaches the whole process
    group: each task gets SIGINT twice (from the terminal and forwarded), which is still one request.
    Either way each running task saves one stop checkpoint, and `sweep resume` finishes from them."""
    sig = signal.SIGTERM if how == "SIGTERM" else signal.SIGINT
    sweep_dir = tmp_path / "sweep"
    exp = sweep_experiment(tmp_path, tiny_fashion_mnist)
    sweep = subprocess.Popen([sys.executable, "-m", "vitbench", "sweep", "run", str(exp),
                              "--sweep-dir", str(sweep_dir)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                             start_new_session=True)  # its own process group, like a shell job
    logs = sweep_dir / "logs"
    # Both running tasks are training (each printed an epoch line), the third waits for a slot.
    wait_for(lambda: len([p for p in logs.glob("*.log") if echoed_epochs(p) >= 1]) == 2, sweep, 300,
             "two training tasks")
    if how == "Ctrl-C":
        os.killpg(sweep.pid, signal.SIGINT)
    else:
        sweep.send_signal(signal.SIGTERM)
    out, err = sweep.communicate(timeout=180)
    assert sweep.returncode == 128 + sig, out + err
    last = err.strip().splitlines()[-1]
    assert last == f"vitbench: interrupted by {sig.name}: 0 of 3 task(s) done; finish the others with " \
                   f"`vitbench sweep resume {sweep_dir.resolve()}`", err
    assert not run_tasks(sweep_dir), "orphaned run-task processes"
    tasks = json.loads((sweep_dir / "sweep.json").read_text())["tasks"]
    runs = [Path(t["run_dir"]) for t in tasks]
    stopped = [r for r in runs if r.exists()]
    assert len(stopped) == 2 and all((r / "hpc_ckpt_1.ckpt").is_file() for r in stopped), out
    assert out.count("checkpoint saved") == 2, out
    before = {r: (r / "metrics.jsonl").read_text() if (r / "metrics.jsonl").exists() else "" for r in stopped}

    from vitbench.sweep.sweepdir import load_sweep, task_states

    states = sorted(s.state for s in task_states(load_sweep(sweep_dir)))
    assert states == ["failed", "failed", "not started"], states  # what `sweep resume` reruns
    if how == "Ctrl-C":  # the same state as after SIGTERM (above), which is resumed below
        for run in stopped:
            assert_resumable(run / "hpc_ckpt_1.ckpt")
        return

    resume = subprocess.run([sys.executable, "-m", "vitbench", "sweep", "resume", str(sweep_dir), "--parallel", "3"],
                            capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert resume.returncode == 0, resume.stdout + resume.stderr[-3000:]
    assert "3 done, 0 failed of 3" in resume.stdout, resume.stdout
    for t, run in zip(tasks, runs):
        results = json.loads((run / "results.json").read_text())
        assert results["epochs"] == SWEEP_EPOCHS and results["seed"] == t["seed"]
        text = (run / "metrics.jsonl").read_text()
        assert_resumed_rows(strict_rows(run / "metrics.jsonl"), before.get(run, ""), text, SWEEP_EPOCHS)
    all_logs = "".join(p.read_text() for p in logs.glob("*.log"))
    for run in stopped:  # resumed from the checkpoint the stop saved, not started over
        assert f"Restored all states from the checkpoint at {run}/hpc_ckpt_1.ckpt" in all_logs


def test_device_batches_resume_a_pass_where_its_checkpoint_left_it():
    """The stateful-dataloader protocol Lightning saves in a checkpoint: the rest of that epoch's order."""
    import numpy as np
    import torch

    from vitbench.data.device_batches import DeviceBatches

    images = torch.arange(100, dtype=torch.uint8).view(100, 1, 1, 1)
    labels = torch.arange(100)

    def batches(**kw):
        return DeviceBatches(images, labels, np.arange(5, 95), 8, shuffle=True, seed=1, epoch=lambda: 3, **kw)

    full = [y.tolist() for _, y in batches()]
    interrupted = batches()
    it = iter(interrupted)
    seen = [next(it)[1].tolist() for _ in range(4)]
    state = interrupted.state_dict()
    assert state == {"epoch": 3, "batches": 4}
    resumed = batches()
    resumed.load_state_dict(state)
    assert seen + [y.tolist() for _, y in resumed] == full  # the same order, nothing twice, nothing lost
    assert [y.tolist() for _, y in resumed] == full  # the pass after it starts from the beginning
    other = batches()
    other.load_state_dict({"epoch": 2, "batches": 4})  # a state of another epoch does not apply
    assert [y.tolist() for _, y in other] == full
    used = {"n": 2}  # what the trainer reports it used, not what the iterator served ahead of it
    ahead = batches(consumed=lambda: used["n"])
    it = iter(ahead)
    [next(it) for _ in range(3)]
    assert ahead.state_dict() == {"epoch": 3, "batches": 2}
