"""The chaos loop: one study SIGKILLed at seeded random moments through its whole life (trials
running, a checkpoint being written, `resume` itself twice in a row, the champion's export and
registration, the study summary, the report), `resume` after each; at the end it must be whole.

`make chaos N=5` runs it N times with fresh seeds (and the node-loss test beside it);
`RESNET_SEARCH_CHAOS_SEED=S make chaos N=1` replays seed S's plan.
"""

from __future__ import annotations

import pytest
from chaos import Loop, assert_study_whole, chaos_seed, full_loop, kill_plan, redone_epochs
from study_helpers import study_toml

from search.tracking import tags
from search.tracking.summary import NOTE_TAG

pytestmark = pytest.mark.slow

# make chaos: 8 trials x 8 epochs; CI: 6 x 4 (its cost is the ~8 driver starts, not training).
SAMPLES, EPOCHS = (8, 8) if full_loop() else (6, 4)


def chaos_study(name: str, storage) -> str:
    """WRN-10-1 trials on digits under ASHA, 2 at a time (~0.3 s an epoch on one core)."""
    return study_toml(name, study={"num_samples": SAMPLES, "max_concurrent_trials": 2, "seed": 3},
                      train={"epochs": EPOCHS, "batch_size": 64},
                      space={"family": "wrn", "depth": 10, "width": 1,
                             "lr": {"low": 0.03, "high": 0.2, "log": True}}, replace_space=True,
                      scheduler={"kind": "asha", "grace_period": EPOCHS // 4, "reduction_factor": 2},
                      storage={"path": str(storage)})


def test_a_study_killed_at_random_moments_through_its_life_ends_whole(studies, tmp_path):
    seed, name, storage = chaos_seed(), "chaos", tmp_path / "results"
    plan = kill_plan(seed, full_loop())
    print(f"chaos seed {seed}: {len(plan)} kills: " + "; ".join(map(str, plan)), flush=True)
    studies.write(name, chaos_study(name, storage))
    loop = Loop(studies, name, seed, storage)
    for number, kill in enumerate(plan):
        loop.kill(kill, "run" if number == 0 else "resume")
    last_resume = loop.finish()
    context = loop.context()
    assert_study_whole(studies, name, SAMPLES, storage, context)
    client = studies.client()
    study_run = client.get_run(studies.trial_runs(name)[0].data.tags[tags.PARENT])
    assert study_run.data.tags.get(tags.WRAPPED_UP) == "true", context
    assert study_run.info.status == "FINISHED", f"{context}\n{study_run.info.status}"
    assert study_run.data.tags[NOTE_TAG].startswith(f"## Study {name}: completed"), context
    assert any(a.path == "report" for a in client.list_artifacts(study_run.info.run_id)), context
    assert not loop.leftovers(), f"{context}\nprocesses left: {loop.leftovers()}"
    # Last: a kill that did not land (its command ended first) leaves a phase untested.
    assert "exited" not in context, f"{context}\n(a kill that did not land)\n{loop.log_tail()}"
    resumed = loop.seconds_to_first_epoch()
    print(f"RELIABILITY chaos: seed {seed}; {len(plan)} kills survived; trial runs {SAMPLES} / "
          f"{len(studies.trial_runs(name))}; epochs redone {redone_epochs(storage, name)} in all; "
          f"resume to first new epoch {', '.join(f'{s:.0f}' for s in resumed)} s; "
          f"last resume {last_resume:.0f} s")
