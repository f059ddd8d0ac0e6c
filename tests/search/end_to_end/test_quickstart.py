"""The quickstart does what the README says: best val accuracy >= 0.98, champion test >= 0.97."""

from __future__ import annotations

import json
import re

import pytest
from study_helpers import ROOT, Studies

README_FIGURES = re.compile(r"best validation accuracy >= (0\.\d+) and champion test accuracy "
                            r">= (0\.\d+)")


def readme_figures() -> tuple[float, float]:
    """The promise the README makes for the quickstart (one line keeps the test and it in step)."""
    text = " ".join((ROOT / "README.md").read_text().split())
    match = README_FIGURES.search(text)
    assert match, "README.md no longer states the quickstart's figures"
    return float(match.group(1)), float(match.group(2))


@pytest.mark.slow
def test_quickstart_meets_the_readme_figures(tmp_path):
    val_target, test_target = readme_figures()
    studies = Studies(tmp_path / "home", private_ray=True)  # as `make demo` runs it
    result = studies.cli("run", str(ROOT / "configs" / "quickstart.toml"), "--name", "qs",
                         "--quiet", timeout=1500)
    assert result.returncode == 0, result.stderr[-3000:]
    # --quiet: the study's own lines only, not Ray's notice of its private cluster's token.
    assert "Token authentication" not in result.stdout + result.stderr, result.stderr[-3000:]
    best = studies.cli("best", "qs", "--json")
    assert best.returncode == 0, best.stderr
    report = json.loads(best.stdout)
    assert report["best"]["value"] >= val_target, report["best"]
    assert report["test_accuracy"] >= test_target, report
