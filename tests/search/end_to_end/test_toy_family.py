"""A network family added through resnet_core's registry alone is a family every command knows.

The toy family (tests/resnet_core/test_families.py: two plain stages, depth 2n+2, a width
factor) is registered in every process of the study, the Ray workers included, by a
`sitecustomize` on PYTHONPATH: what a family shipped in its own module does when imported.
Nothing in search/ names it, yet `check` explains its space and a study trains it.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from study_helpers import ROOT, Studies, study_toml

from search.tracking import tags

pytestmark = pytest.mark.slow

# Registered as a plug-in would register it: an entry and the path of its module's network.
SITECUSTOMIZE = f"""
import sys

sys.path.append({str(ROOT / "tests" / "resnet_core")!r})

from resnet_core import DepthRule, NetworkFamily, register_family

register_family(NetworkFamily(
    "toy-net", "two plain stages", preactivation=False, shortcuts=False,
    depth_rules=(DepthRule("basic", 2, 2),), has_width=True,
    builder="test_families:TwoStageNet"))
"""


@pytest.fixture
def studies(tmp_path: Path) -> Studies:
    plugin = tmp_path / "plugin"
    plugin.mkdir()
    (plugin / "sitecustomize.py").write_text(textwrap.dedent(SITECUSTOMIZE))
    (tmp_path / "home").mkdir()
    # A private Ray: its workers start from this environment, and so register the family.
    studies = Studies(tmp_path / "home", private_ray=True)
    studies.env["PYTHONPATH"] = f"{plugin}:{ROOT}"
    return studies


def test_a_registered_family_is_checked_and_trained_by_a_study(studies):
    path = studies.write("toy", study_toml(
        "toy", replace_space=True, study={"num_samples": 2},
        space={"family": "toy-net", "depth": [4, 6], "width": [1, 2]},
        train={"epochs": 1}))

    checked = studies.cli("check", str(path), "--json")
    assert checked.returncode == 0, checked.stderr
    rows = {row["name"]: row for row in json.loads(checked.stdout)["space"]}
    assert rows["depth"]["depths"] == {"toy-net": [4, 6]}
    assert rows["width"]["sampled"] == "when family is toy-net"

    result = studies.cli("run", str(path), "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]
    runs = studies.trial_runs("toy")
    assert len(runs) == 2
    assert {r.data.params["model.family"] for r in runs} == {"toy-net"}
    assert {r.data.tags[tags.STATUS] for r in runs} == {tags.COMPLETED}
    assert all(0 < r.data.metrics["val_accuracy"] <= 1 for r in runs)
