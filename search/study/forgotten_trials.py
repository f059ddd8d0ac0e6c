"""Trial runs of trials that Tune's restored state never knew: dropped by `resume`.

Tune saves its experiment state every few seconds, the trial callback creates a trial's MLflow
run when the trial starts. A driver killed between the two leaves a trial run whose trial the
restored Tuner does not have: its searcher, restored from the same older state, hands that
trial's Optuna number to a new trial, so the study would hold one trial run too many and a
number twice (found by the chaos loop, tests/search/end_to_end/test_chaos.py: 7 trial runs
for 6 samples, the 7th `running` with no epoch). What that trial trained is trained again by
the new one.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from search.tracking import store, tags
from search.tracking.trial_index import write_index


def known_trial_ids(results) -> set[str]:
    """The trials of Tune's results: by the id each reported, and by their folders
    (search.study.run.trial_name), for a trial that has reported nothing yet."""
    known = set()
    for result in results:
        if (result.metrics or {}).get("trial_id"):
            known.add(str(result.metrics["trial_id"]))
        if result.path:
            known.add(Path(result.path).name.removeprefix("trial_"))
    return known


def drop_forgotten_trial_runs(client, study_run_id: str, results) -> int:
    """Delete the trial runs whose trial Tune does not know; how many.

    The study run's trial index is rewritten without them first (a reader takes its rows as
    they are unless a run changed since, and a deleted run is never found changed); a driver
    killed between the two leaves the runs for the next `resume` to drop."""
    study_run = client.get_run(study_run_id)
    known = known_trial_ids(results)
    stamp_ms = int(time.time() * 1000)  # before the read: what changes during it is after
    runs = store.trial_runs(client, study_run)
    forgotten = [r for r in runs if r.data.tags.get(tags.TRIAL_ID) not in known]
    if not forgotten or not known:
        return 0
    write_index(client, study_run, [r for r in runs if r not in forgotten], stamp_ms)
    for run in forgotten:
        client.delete_run(run.info.run_id)
        print(f"resnet-search: trial run {run.info.run_name} dropped: its trial "
              f"{run.data.tags.get(tags.TRIAL_ID)} is not in Tune's restored state (the driver "
              f"died before Tune saved it); its Optuna number went to a new trial",
              file=sys.stderr)
    return len(forgotten)
