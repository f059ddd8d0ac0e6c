"""The search-efficiency benchmark's smoke test: `--quick` runs every method end to end.

It trains real (tiny) networks through Ray Tune, so it is `slow`. Speed is the
benchmark's business, not this test's: it checks only what the results say.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from common import ROOT

SCRIPT = ROOT / "benchmarks" / "search_efficiency.py"
METHODS = ("random", "tpe", "random+asha", "tpe+asha", "tpe+asha-g1")


@pytest.mark.slow
def test_quick_run_records_a_sound_curve_per_method(tmp_path: Path) -> None:
    out = tmp_path / "search_efficiency.json"
    plot = tmp_path / "search_efficiency.png"
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--json", str(out),
                           "--plot", str(plot)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert plot.stat().st_size > 0
    budget = result["settings"]["budget"]
    runs = {run["method"]: run for run in result["runs"]}
    assert set(runs) == set(METHODS)
    for method, run in runs.items():
        curve = run["curve"]
        assert curve, f"{method}: no curve"
        epochs = [point["trial_epochs"] for point in curve]
        assert epochs == list(range(1, len(curve) + 1)), f"{method}: one point per trial-epoch"
        best = [point["best_val"] for point in curve]
        assert best == sorted(best), f"{method}: best-so-far went down"
        assert best[-1] == max(point["val_accuracy"] for point in curve)
        # The trial-epochs on the curve are the epochs the trials ran, no more, no less.
        assert sum(trial["epochs"] for trial in run["trials"]) == epochs[-1] == run["trial_epochs"]
        assert epochs[-1] >= budget
        assert all(trial["epochs"] <= result["settings"]["epochs"] for trial in run["trials"])
        assert run["final_test"] is not None and 0.0 <= run["final_test"] <= 1.0
        assert all(point["selected_test"] is not None for point in curve)
        walls = [point["wall_s"] for point in curve]
        assert walls == sorted(walls)
    # Without early stopping every trial runs every epoch.
    for method in ("random", "tpe"):
        assert all(t["epochs"] == result["settings"]["epochs"] for t in runs[method]["trials"])
    # The summary's ratios, recomputed from the curves: trial-epochs until best-so-far first
    # reaches random's final best, over random's own count (one seed per method here).
    summary = result["summary"]
    target = summary["target_best_val"]
    assert target == runs["random"]["curve"][-1]["best_val"]

    def reach(curve: list[dict]) -> int | None:
        return next((p["trial_epochs"] for p in curve if p["best_val"] >= target - 1e-12), None)

    assert summary["random_trial_epochs"] == reach(runs["random"]["curve"])
    for method, run in runs.items():
        need = reach(run["curve"])
        expected = None if need is None else need / summary["random_trial_epochs"]
        assert summary["methods"][method]["ratio_to_random"] == pytest.approx(expected), method
    assert result["machine"]["versions"]["ray"]
