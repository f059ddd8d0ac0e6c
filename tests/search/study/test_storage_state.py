"""Tune's saved state against what storage holds: a checkpoint it names but deleted since."""

from __future__ import annotations

import json
from pathlib import Path

from search.study.storage_state import stand_in_for_deleted_checkpoints


def _state(experiment: Path, trials: dict[str, str | None]) -> None:
    """An experiment state as Tune writes it: per trial, its JSON and its runtime JSON."""
    data = [[json.dumps({"trial_id": trial}),
             json.dumps({"last_result": {"epoch": 2, **({"checkpoint_dir_name": name} if name else {})}})]
            for trial, name in trials.items()]
    (experiment / "experiment_state-2026-12-03_10-00-00.json").write_text(
        json.dumps({"trial_data": data, "runner_data": {}, "stats": {}}))


def test_a_deleted_checkpoint_the_state_names_gets_an_empty_stand_in(tmp_path, capsys):
    """The chaos loop's case (seed 2392701): Tune's state names checkpoint_000001, which the
    driver deleted (num_to_keep) once 000002 and 000003 arrived, before it saved the state."""
    for trial, folders in {"a": ["checkpoint_000002", "checkpoint_000003"],
                           "b": ["checkpoint_000001"], "c": []}.items():
        for folder in folders:
            (tmp_path / f"trial_{trial}" / folder).mkdir(parents=True)
        (tmp_path / f"trial_{trial}").mkdir(exist_ok=True)
    _state(tmp_path, {"a": "checkpoint_000001", "b": "checkpoint_000001", "c": None,
                      "gone": "checkpoint_000004"})
    assert stand_in_for_deleted_checkpoints(str(tmp_path)) == ["trial_a/checkpoint_000001"]
    assert list((tmp_path / "trial_a" / "checkpoint_000001").iterdir()) == []
    assert "trial_a/checkpoint_000001" in capsys.readouterr().err
    assert stand_in_for_deleted_checkpoints(str(tmp_path)) == []  # once


def test_no_state_or_a_torn_one_changes_nothing(tmp_path):
    assert stand_in_for_deleted_checkpoints(str(tmp_path)) == []
    (tmp_path / "experiment_state-2026-12-03_10-00-00.json").write_text('{"trial_data": [[')
    assert stand_in_for_deleted_checkpoints(str(tmp_path)) == []
