"""The convergence check: a run's verdict from its validation history, and the one a real run records."""

from __future__ import annotations

import json

import pytest

from vitbench.training.convergence import verdict

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
