"""The driver's warm-up steps work in this environment.

`warm_up` swallows every error (a warm-up must never cost a study), so a step broken by
an upgrade of torch, MLflow or Optuna would go unnoticed: the study would silently pay
its cost on the critical path again. Each step is run here directly, errors and all.
"""

from __future__ import annotations

import pytest

from search.study.warmup import WARM_UP_STEPS


@pytest.mark.slow
@pytest.mark.parametrize("step", WARM_UP_STEPS, ids=lambda step: step.__name__.lstrip("_"))
def test_each_warm_up_step_runs(step):
    step()
