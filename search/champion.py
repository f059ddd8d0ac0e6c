"""The end of a study: score the best trial once on the test split and register it.

The model is logged on the study run as an MLflow PyTorch model (torch.export
format, no pickled code) with the weights-only checkpoint inside it
(`extra_files/checkpoint.pt`), registered under `registered_model`, and the
alias `champion` is moved to the new version.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from resnet_core.checkpoint import CHECKPOINT_FILE, model_from_checkpoint
from search.config import StudyConfig

CHAMPION_ALIAS = "champion"


def register_champion(config: StudyConfig, uri: str, study_run_id: str, best, checkpoint
                      ) -> dict[str, Any]:
    import mlflow
    import numpy as np

    from search import tracking
    from search.single_run import data_config_from_dict, evaluate_module

    client = tracking.client_for(uri)
    with tempfile.TemporaryDirectory(prefix="resnet-search-champion-") as scratch:
        local = Path(checkpoint.to_directory(str(Path(scratch) / "checkpoint")))
        model, state = model_from_checkpoint(local)
        data_config = data_config_from_dict(state["data_config"])
        scored = evaluate_module(model, data_config, split="test", device="cpu",
                                 source=str(checkpoint.path))
        test_accuracy, test_loss = scored["accuracy"], scored["loss"]
        checkpoint_file = Path(scratch) / CHECKPOINT_FILE
        shutil.copyfile(local / CHECKPOINT_FILE, checkpoint_file)
        image_shape = data_config.image_shape
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        trial_run = _trial_run_id(client, study_run_id, best)
        client.log_batch(study_run_id, metrics=[
            _metric("test_accuracy", test_accuracy), _metric("test_loss", test_loss),
        ])
        client.set_tag(study_run_id, "best_trial_id", str(best.metrics.get("trial_id", "")))
        if trial_run:
            client.set_tag(study_run_id, "best_trial_run_id", trial_run)
            client.log_batch(trial_run, metrics=[_metric("test_accuracy", test_accuracy)])
        with mlflow.start_run(run_id=study_run_id):
            info = mlflow.pytorch.log_model(
                model, name="model",
                input_example=np.zeros((1, *image_shape), dtype=np.float32),
                extra_files=[str(checkpoint_file)],
                metadata={"model_config": state["model_config"], "test_accuracy": test_accuracy},
            )
    version = mlflow.register_model(info.model_uri, config.registered_model,
                                    tags={"test_accuracy": f"{test_accuracy:.6f}",
                                          "study": config.study.name,
                                          "trial_id": str(best.metrics.get("trial_id", ""))})
    client.set_registered_model_alias(config.registered_model, CHAMPION_ALIAS, version.version)
    client.set_model_version_tag(config.registered_model, version.version, "test_loss",
                                 f"{test_loss:.6f}")
    metric = config.study.metric
    best_summary = {
        "trial_id": best.metrics.get("trial_id"),
        "mlflow_run_id": trial_run,
        "config": {k: best.config.get(k) for k in ("model", "train")},
        metric: _best_value(best, metric, config.study.mode),
        "checkpoint": str(checkpoint.path),
    }
    return {"best": best_summary, "version": version.version, "test_accuracy": test_accuracy}


def _metric(key: str, value: float):
    import time

    from mlflow.entities import Metric

    return Metric(key, float(value), int(time.time() * 1000), 0)


def _best_value(result, metric: str, mode: str) -> float | None:
    history = result.metrics_dataframe
    if history is None or metric not in history:
        return result.metrics.get(metric)
    series = history[metric].dropna()
    return float(series.max() if mode == "max" else series.min())


def _trial_run_id(client, study_run_id: str, best) -> str | None:
    from search import tracking

    trial_id = best.metrics.get("trial_id")
    study_run = client.get_run(study_run_id)
    runs = client.search_runs(
        [study_run.info.experiment_id],
        filter_string=f"tags.`{tracking.PARENT}` = '{study_run_id}' and "
                      f"tags.`{tracking.TRIAL_ID}` = '{trial_id}'",
        max_results=1,
    )
    return runs[0].info.run_id if runs else None
