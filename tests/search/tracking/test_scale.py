"""A study larger than one page of MLflow's search results is read whole.

MLflow answers a run search one page at a time (at most 50,000 runs a page); a reader that asks
for one page of 10,000 silently drops the rest. The study here has 10,050 trial runs, written by
the platform's own trial callback (tests/scale_store.py), and its best trial is the 10,040th:
`status`, `best` and the ranking the champion is chosen by must all count every trial and name
that one.

The readers answer from the study's trial index (search.tracking.trial_index) and the runs
changed since it; where the index is missing or stale they must still be right.

Marked slow: the store takes ~35 s to write, and its summary and the fallback test read all
10,050 runs (~25 s each on a 2-core machine, most of it MLflow building its run objects;
benchmarks/RESULTS.md).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from common import cli
from scale_store import write_scale_study

from search.results.retrieve import study_status
from search.tracking import store, tags, trial_index

TRIALS = 10_050
BEST = 10_039  # Optuna numbers count from 0: the 10,040th trial


@pytest.fixture(scope="module")
def big_study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scale")
    uri, study_run_id = write_scale_study(folder, trials=TRIALS, epochs=2, best=BEST)
    return uri, study_run_id


def command_output(big_study, command: str) -> str:
    """What `resnet-search COMMAND scale` prints about the big study (it must succeed)."""
    shown = cli(command, "scale", "--tracking-uri", big_study[0])
    assert shown.returncode == 0, shown.stderr
    return shown.stdout


@pytest.mark.slow
def test_status_counts_every_trial_and_names_the_10040th_best(big_study):
    shown = command_output(big_study, "status")
    assert f"{TRIALS} of {TRIALS} trials" in shown
    counts = re.search(r"trials: (.*)", shown).group(1)
    assert sum(int(n) for n in re.findall(r"(\d+) \w+", counts)) == TRIALS
    assert f"best: trial t{BEST:06d}" in shown


@pytest.mark.slow
def test_best_names_the_10040th_trial(big_study):
    shown = command_output(big_study, "best")
    assert f"best trial of scale: t{BEST:06d} (Optuna #{BEST}," in shown


@pytest.mark.slow
def test_studies_counts_every_trial(big_study):
    shown = cli("studies", "--tracking-uri", big_study[0])
    assert shown.returncode == 0, shown.stderr
    row = next(line for line in shown.stdout.splitlines() if line.startswith("scale "))
    assert row.split()[1:3] == ["completed", str(TRIALS)]


@pytest.mark.slow
def test_the_champion_is_chosen_among_every_trial_from_the_index(big_study, monkeypatch):
    uri, study_run_id = big_study
    client = store.client_for(uri)
    study_run = client.get_run(study_run_id)
    monkeypatch.setattr(trial_index, "trial_runs", _no_full_read)
    ranked = store.rank_runs(study_run, trial_index.current_trial_runs(client, study_run))
    assert len(ranked) == TRIALS
    assert ranked[0][0].number == BEST


def _no_full_read(*args, **kwargs):
    raise AssertionError("every trial run was read: the index was not used")


@pytest.mark.slow
def test_without_its_index_the_study_is_read_whole_and_indexed_again(big_study):
    uri, study_run_id = big_study
    client = store.client_for(uri)
    study_run = client.get_run(study_run_id)
    index = Path(client.get_run(study_run_id).info.artifact_uri.removeprefix("file://"),
                 tags.TRIAL_INDEX_ARTIFACT)
    index.unlink()  # a study written before the index existed
    status = study_status("scale", uri)
    assert len(status["trials"]) == TRIALS and status["best"]["optuna_trial_number"] == BEST
    # The reader left an index (the study is over: no driver writes one), so the next is fast.
    rows, _ = trial_index.read_index(client, study_run)
    assert len(rows) == TRIALS


# ---------------------------------------------------------------- readable at size

SIZE = 290


@pytest.fixture(scope="module")
def sized_study(tmp_path_factory):
    uri, _ = write_scale_study(tmp_path_factory.mktemp("sized"), trials=SIZE, epochs=2,
                               best=123, running=2)
    return uri


def _trial_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if re.match(r"\s*(\d+|-)\s+\d+\s+t\d{6}\s", line)]


def test_status_of_a_big_study_shows_the_best_ten_the_running_ones_and_the_counts(sized_study):
    shown = cli("status", "scale", "--tracking-uri", sized_study)
    assert shown.returncode == 0, shown.stderr
    rows = _trial_lines(shown.stdout)
    assert len(rows) == 12  # the best 10, then the 2 still training
    assert "t000123" in rows[0].split() and rows[0].split()[0] == "1"
    assert [r.split()[3] for r in rows[10:]] == ["running", "running"]
    assert "290 of 290 trials: " in shown.stdout and "completed" in shown.stdout
    assert "278 more trials" in shown.stdout
    assert len(shown.stdout.splitlines()) < 25


def test_status_top_all_and_json_show_what_they_say(sized_study):
    top = cli("status", "scale", "--tracking-uri", sized_study, "--top", "3")
    rows = [r.split() for r in _trial_lines(top.stdout)]
    assert [r[0] for r in rows[:3]] == ["1", "2", "3"]
    assert [r[3] for r in rows[3:]] == ["running", "running"]
    every = cli("status", "scale", "--tracking-uri", sized_study, "--all")
    assert len(_trial_lines(every.stdout)) == SIZE
    assert "more trials" not in every.stdout
    data = json.loads(cli("status", "scale", "--tracking-uri", sized_study, "--json").stdout)
    assert len(data["trials"]) == SIZE and sum(data["counts"].values()) == SIZE


def test_the_live_table_of_a_big_study_shows_the_running_and_the_best_trials(tmp_path, monkeypatch,
                                                                             capsys):
    from ray.tune.experiment import Trial
    from study_helpers import study_toml

    from search.study.run import progress_table
    from search.studyfile.config import load_study

    path = tmp_path / "big.toml"
    path.write_text(study_toml("big", study={"num_samples": 2000}))
    reporter = progress_table(load_study(path))
    reporter.set_search_properties("val_accuracy", "max")  # what Tune hands it from the study
    trials = []
    for number in range(2000):
        trial = Trial("trainable", trial_id=f"t{number:05d}", stub=True, config={
            "network": "wrn-16-2", "model": {"dropout": 0.1},
            "train": {"optimizer": "sgd", "lr": 0.05}})
        trial.status = Trial.RUNNING if number >= 1997 else Trial.TERMINATED
        accuracy = 0.99 if number == 1234 else 0.5 + (number * 7919 % 1000) / 2500
        trial.run_metadata.last_result = {"epoch": 1, "val_accuracy": accuracy,
                                          "best_val_accuracy": accuracy, "config": trial.config}
        trials.append(trial)
    # Stub trials have no Ray storage: the table names this folder instead.
    for folder in ("local_experiment_path", "local_path"):
        monkeypatch.setattr(Trial, folder, property(lambda trial: str(tmp_path)))
    table = reporter._progress_str(trials, False)  # a report while trials run
    rows = [line for line in table.splitlines() if line.startswith("| trainable_")]
    assert len(rows) <= 30 and len(table.splitlines()) < 45
    assert [r.split()[3] for r in rows[:3]] == ["RUNNING"] * 3
    assert "t01234" in rows[3]  # the best finished trial leads the finished ones
    assert "more trials not shown" in table
    # The last report, when the study ends, is as short (Tune's own lists every trial).
    capsys.readouterr()
    reporter.report(trials, True)
    last = capsys.readouterr().out
    assert len(last.splitlines()) < 45 and "more trials not shown" in last


# ---------------------------------------------------------------- the index against the runs


def test_the_index_answers_as_every_run_read_whole(sized_study):
    client = store.client_for(sized_study)
    study_run = store.find_study_run(client, "scale")
    rows, _ = trial_index.read_index(client, study_run)
    assert len(rows) == SIZE
    assert _status_rows(client, study_run, rows) == _status_rows(
        client, study_run, store.trial_runs(client, study_run))


def _status_rows(client, study_run, runs) -> list[dict]:
    from search.results.retrieve import _trial_row
    from search.tracking.records import read_study

    return [_trial_row(t) for t in read_study(client, study_run, runs=runs).by_rank()]


def test_what_a_trial_wrote_after_the_index_is_read_from_its_run(tmp_path):
    """The driver wrote a running trial's best epoch, then its end, and died before the
    index's next rewrite: the readers see both, from the trial's run."""
    import time

    from search.tracking.callback import epoch_record
    from search.tracking.journal import RecordWriter

    uri, study_run_id = write_scale_study(tmp_path, trials=30, epochs=2, best=5, running=1)
    client = store.client_for(uri)
    study_run = client.get_run(study_run_id)
    last = "t000029"
    writer = RecordWriter(lambda: client, study_run_id, study_run.info.experiment_id,
                          "val_accuracy", "max", reopen=False)
    writer.apply(epoch_record(last, {"epoch": 2, "val_accuracy": 0.999, "val_loss": 0.01}, [],
                              int(time.time() * 1000)))
    best = study_status("scale", uri)["best"]
    assert (best["trial_id"], best["status"], best["epochs"]) == (last, tags.RUNNING, 2)
    writer.apply({"kind": "end", "trial": last, "status": tags.COMPLETED, "checkpoint": None})
    status = study_status("scale", uri)
    assert status["best"]["trial_id"] == last and tags.RUNNING not in status["counts"]
    # The index itself still holds the trial as it was: its stamp sent the readers to the run.
    rows, _ = trial_index.read_index(client, study_run)
    (kept,) = [row for row in rows if row.data.tags[tags.TRIAL_ID] == last]
    assert kept.data.tags[tags.STATUS] == tags.RUNNING and kept.data.metrics["epoch"] == 1
