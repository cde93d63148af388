"""The convergence check: a run's verdict from its validation history, and the one a real run records."""

from __future__ import annotations

import json

import pytest
import yaml

from vitbench.training.convergence import judge, verdict

# (step, val_acc) over a 1000-step budget: the last quarter starts after step 750.
PLATEAU = [(125, 0.70), (250, 0.80), (375, 0.84), (500, 0.852), (625, 0.858), (750, 0.860), (875, 0.862), (1000, 0.863)]
STILL_RISING = [(125, 0.40), (250, 0.50), (375, 0.56), (500, 0.60), (625, 0.63), (750, 0.65), (875, 0.67), (1000, 0.68)]


def test_a_plateau_converged_and_a_rising_curve_did_not():
    flat = verdict(PLATEAU, 1000)
    assert flat["converged"] and flat["best_early"] == 0.860 and flat["best_late"] == 0.863
    assert flat["gain"] == pytest.approx(0.003)
    rising = verdict(STILL_RISING, 1000)
    assert not rising["converged"] and rising["gain"] == pytest.approx(0.03)


def test_the_threshold_is_half_a_point_of_the_best_before_the_last_quarter():
    # The best early value counts, not the last one: a dip before the last quarter is no gain.
    assert verdict([(100, 0.80), (700, 0.78), (900, 0.8049)], 1000)["converged"]
    assert not verdict([(100, 0.80), (700, 0.78), (900, 0.8051)], 1000)["converged"]


def test_with_cycles_the_last_quarter_of_the_last_cycle_is_judged_against_everything_before():
    # 5 cycles of 8,000 steps, 8 validations each: each restart dips, each anneal ends higher, and the
    # fifth cycle's end (0.86) gains nothing over the fourth's: converged, however many cycles came before.
    ends = [0.80, 0.82, 0.84, 0.86, 0.86]
    history = [(k * 8000 + i * 1000, end - 0.03 + 0.03 * i / 8) for k, end in enumerate(ends) for i in range(1, 9)]
    judged = verdict(history, 40000, cycle=8000)
    assert judged["converged"] and judged["best_late"] == pytest.approx(0.86) and judged["gain"] == pytest.approx(0)
    # Four cycles in, the fourth still gained 2 points on the third: another cycle was due.
    assert not verdict([p for p in history if p[0] <= 32000], 32000, cycle=8000)["converged"]
    # One cycle of 40,000 steps with the same history would compare its last quarter (cycle 4's tail too).
    assert not verdict(history, 40000)["converged"]


def test_the_verdict_while_training_is_the_one_recomputed_from_results_json():
    # A real run's accuracies (vit, 2,500 images, cycle 2): unrounded, the gain is 0.4999995 points; at the
    # 6 digits val_history keeps, exactly 0.5. Both must read it the same way: not converged.
    live = [(14000, 0.8423333168029785), (15000, 0.8473333120346069), (16000, 0.8446666598320007)]
    stored = [(s, round(a, 6)) for s, a in live]
    assert verdict(live, 16000, cycle=8000) == verdict(stored, 16000, cycle=8000)
    assert not verdict(live, 16000, cycle=8000)["converged"]


@pytest.mark.parametrize("history", [[], [(1000, 0.9)], [(100, 0.8), (500, 0.85)]])
def test_a_run_that_cannot_be_judged_is_not_converged(history):
    assert verdict(history, 1000)["converged"] is False


def test_a_real_run_records_its_validations_and_verdict(tmp_path, tiny_fashion_mnist):
    from vitbench.cli import main

    out = tmp_path / "run"
    assert main(["train", "--dataset", tiny_fashion_mnist, "--samples-per-class", "30", "--max-steps", "80",
                 "--batch-size", "16", "--accelerator", "cpu", "--wandb", "disabled", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    history = results["val_history"]
    assert len(history) == results["validations"] >= 2
    assert [s for s, _ in history] == sorted(s for s, _ in history) and history[-1][0] == results["steps"] == 80
    assert max(a for _, a in history) == pytest.approx(results["best_val_acc"])
    assert results["converged"] == verdict(history, 80)["converged"]
    assert "last 25% of the steps" in results["rule"]
    # The last row's rate is the one the last step used: the end of the cosine, not a new warm-up.
    from vitbench.training.classifier import MIN_LR_RATIO

    lr = yaml.safe_load((out / "config.yaml").read_text())["optim"]["lr"]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert lr * MIN_LR_RATIO <= rows[-1]["lr"] < 1.1 * lr * MIN_LR_RATIO, rows[-1]


@pytest.mark.slow
def test_cycles_train_on_from_the_weights_only_while_the_check_fails(tmp_path, tiny_fashion_mnist, monkeypatch):
    """``budget.cycles``: the learning rate warms up and decays again each cycle, every cycle validates as
    a one-cycle run does, and the run stops at the first cycle whose end passes the check (or the last).
    A run stopped just after a cycle's end resumes there, decides again, and ends as if never stopped."""
    from vitbench.cli import main
    from vitbench.training.callbacks import ConvergenceCycles
    from vitbench.training.schedule import MIN_EVALS

    out, cycle, cycles = tmp_path / "run", 30, 4

    def args(out):
        return ["train", "--dataset", tiny_fashion_mnist, "--samples-per-class", "30", "--max-steps", str(cycle),
                "--cycles", str(cycles), "--batch-size", "16", "--accelerator", "cpu", "--wandb", "disabled",
                "--out", str(out)]

    assert main(args(out)) == 0
    results = json.loads((out / "results.json").read_text())
    history, ran = results["val_history"], results["cycles"]
    # 30 steps from scratch are still learning fast: the first cycle's end cannot pass the check.
    assert 2 <= ran <= cycles and results["steps"] == ran * cycle
    for k in range(1, ran + 1):
        in_cycle = [s for s, _ in history if (k - 1) * cycle < s <= k * cycle]
        assert len(in_cycle) >= MIN_EVALS, history
        judged = verdict([p for p in history if p[0] <= k * cycle], k * cycle, cycle=cycle)
        if k < ran:
            assert not judged["converged"], (k, judged, history)  # a cycle started only after a failed check
    assert results["converged"] == verdict(history, ran * cycle, cycle=cycle)["converged"]
    assert judge(results, None)["converged"] == results["converged"]  # what report and sweep status read
    assert ran == cycles or results["converged"]
    assert ran < cycles  # this run stops early, so the resume below replays a decision to stop too
    # budget.min_cycles: the same run (same seed: the same first cycles) no longer stops where its check
    # passed; it trains at least one more cycle, which the check then weighs against everything before.
    longer = tmp_path / "min_cycles"
    assert main(args(longer) + ["--min-cycles", str(ran + 1)]) == 0
    more = json.loads((longer / "results.json").read_text())
    assert more["cycles"] >= ran + 1 and more["steps"] == more["cycles"] * cycle
    assert [p for p in more["val_history"] if p[0] <= ran * cycle] == history
    assert more["converged"] == verdict(more["val_history"], more["cycles"] * cycle, cycle=cycle)["converged"]
    # 300 images at batch 16: 19 steps an epoch. Step 38 is early in cycle 2, past its warm-up: the rate
    # restarted high, above where cycle 1 had decayed to by step 19.
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["step"] == 19 and rows[1]["step"] == 38 and rows[1]["lr"] > rows[0]["lr"], rows[:2]
    # It stopped after a cycle that passed the check: its last row ends that cycle's cosine, not the
    # warm-up of a cycle that never ran (which starts at lr / warm-up steps, dozens of times the floor).
    from vitbench.training.classifier import MIN_LR_RATIO

    lr = yaml.safe_load((out / "config.yaml").read_text())["optim"]["lr"]
    assert rows[-1]["lr"] < 2 * lr * MIN_LR_RATIO, rows[-1]

    # Killed just after a cycle's end, whose last.ckpt is the validation that judged it: as cycle 2's first
    # step begins (cycle 1 failed the check), or once training is over (the last cycle's verdict, before
    # the test). Resumed, the run decides again and ends as the uninterrupted one did.
    import torch

    class Killed(Exception):
        pass

    def kill_at_step(hook: str, step: int):
        def kill(self, trainer, *args):
            if trainer.global_step == step:
                raise Killed
        return hook, kill

    for n, (hook, step) in enumerate([("on_train_batch_start", cycle), ("on_train_end", ran * cycle)]):
        hook, kill = kill_at_step(hook, step)
        stopped = tmp_path / f"stopped{n}"
        with monkeypatch.context() as m:
            m.setattr(ConvergenceCycles, hook, kill, raising=False)
            with pytest.raises(Killed):
                main(args(stopped))
        assert not (stopped / "results.json").exists()
        assert torch.load(stopped / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == step
        assert main(args(stopped)) == 0
        again = json.loads((stopped / "results.json").read_text())
        keys = ("epochs", "steps", "cycles", "converged", "val_history", "test_acc")
        assert [again[k] for k in keys] == [results[k] for k in keys], hook
        timing = ("time", "images_per_s")
        resumed = [json.loads(line) for line in (stopped / "metrics.jsonl").read_text().splitlines()]
        assert [{k: v for k, v in r.items() if k not in timing} for r in resumed] == \
            [{k: v for k, v in r.items() if k not in timing} for r in rows], hook


def test_min_cycles_above_cycles_is_refused(tiny_fashion_mnist, refused):
    refused("train", "--dataset", tiny_fashion_mnist, "--max-steps", "4", "--cycles", "2", "--min-cycles", "3",
            "--wandb", "disabled", "--out", refused.dir / "run",
            expect=["budget.min_cycles 3 is above budget.cycles 2", "set budget.cycles to at least 3"])


def test_cycles_without_validation_data_are_refused(tiny_fashion_mnist, refused):
    refused("train", "--dataset", tiny_fashion_mnist, "--max-steps", "4", "--cycles", "2", "--set",
            "data.val_fraction=0", "--wandb", "disabled", "--out", refused.dir / "run",
            expect=["budget.cycles 2 needs validation data", "data.val_fraction"])
