"""The end of a study: the ranking's winner is scored once on the test split and registered.

The winner is `search.tracking.ranking`'s first trial, read from the same MLflow numbers
that `status`, `best` and `load_best` read, so every command names one winner.
Its weights are its best epoch's checkpoint (Ray keeps the best checkpoints by
the study metric alongside the latest one, which resume needs).

The model is logged on the study run as an MLflow PyTorch model (torch.export
format, no pickled code) with the weights-only checkpoint inside it
(`extra_files/checkpoint.pt`), registered under `registered_model`, and the
alias `champion` is moved to the new version.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resnet_core import CHECKPOINT_FILE, model_from_checkpoint
from search import fault_points
from search.studyfile.config import StudyConfig
from search.tracking import ranking, tags
from search.trial.spec import TrialSpec

# torch.export is not thread-safe: two exports at once fail inside its tracer
# ("_EXPORT_MODULE_HIERARCHY must not be None"). The champion's export takes this lock too,
# for a study whose trials were all done before it started (a resume) reaches it at once.
EXPORT_LOCK = threading.Lock()


@dataclass(frozen=True)
class Winner:
    """The ranking's best trial, with what registration needs from Ray and MLflow."""

    score: ranking.TrialScore
    mlflow_run_id: str
    spec: TrialSpec  # what the trial trained
    checkpoint: Any  # the Ray checkpoint of its best epoch


def pick_winner(ranked: list[tuple[ranking.TrialScore, Any]], results, metric: str, mode: str
                ) -> Winner | None:
    """The first ranked trial that meets every [constraints] limit and has a checkpoint, or None."""
    by_trial = {r.metrics.get("trial_id"): r for r in results if r.metrics}
    for score, run in ranked:
        result = by_trial.get(score.trial_id)
        if not score.ranked or not score.feasible or result is None:
            continue
        checkpoint = best_epoch_checkpoint(result, score, metric, mode)
        if checkpoint is not None:
            return Winner(score, run.info.run_id, TrialSpec.from_tune(result.config), checkpoint)
    return None


def best_epoch_checkpoint(result, score: ranking.TrialScore, metric: str, mode: str):
    """The checkpoint of the trial's best epoch; the best kept one if that epoch's was dropped."""
    kept = [(c, m) for c, m in (result.best_checkpoints or []) if m and _readable(c)]
    for checkpoint, metrics in kept:
        if score.best is not None and int(metrics.get("epoch", -1)) == score.best.epoch:
            return checkpoint
    best = None
    for checkpoint, metrics in kept:
        epoch = ranking.epoch_score(metrics, metric)
        if epoch is not None and epoch.beats(best[1] if best else None, mode):
            best = (checkpoint, epoch)
    return best[0] if best else result.checkpoint


def _readable(checkpoint) -> bool:
    """False for a torn checkpoint (a writer killed half-way): never the champion's weights."""
    from resnet_core import CheckpointError, load_checkpoint

    try:
        with checkpoint.as_directory() as directory:
            load_checkpoint(directory)
    except (CheckpointError, FileNotFoundError):
        return False
    return True


def register_champion(config: StudyConfig, uri: str, study_run_id: str, winner: Winner
                      ) -> dict[str, Any]:
    """Score the winner on the test split, log it as a model and move the champion alias."""
    import mlflow

    from search.tracking.store import client_for

    client = client_for(uri)
    with tempfile.TemporaryDirectory(prefix="resnet-search-champion-") as scratch:
        model, state, checkpoint_file = _restore(winner.checkpoint, Path(scratch))
        scored = _score_on_test(model, state, str(winner.checkpoint.path))
        test_accuracy, test_loss = scored["accuracy"], scored["loss"]
        _log_scores(client, study_run_id, winner, test_accuracy, test_loss)
        client.log_dict(study_run_id, {k: scored[k] for k in ("class_names", "confusion")},
                        tags.CLASS_SCORES_ARTIFACT)
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        version = registered_version(client, config.registered_model, study_run_id, winner)
        if version is None:
            fault_points.reached("champion_export")
            with EXPORT_LOCK:  # not while the driver's warm-up exports (torch.export is not thread-safe)
                info = _log_model(mlflow, study_run_id, model, state, checkpoint_file,
                                  test_accuracy)
    if version is None:
        # MLflow prints its own two lines on a registration; the study says it in its result.
        with _quiet_stderr() if os.environ.get("RESNET_SEARCH_QUIET") else contextlib.nullcontext():
            version = mlflow.register_model(info.model_uri, config.registered_model, tags={
                "test_accuracy": f"{test_accuracy:.6f}", "test_loss": f"{test_loss:.6f}",
                "study": config.study.name, "trial_id": winner.score.trial_id,
                "best_epoch": str(winner.score.best.epoch)})
        fault_points.reached("champion_register")
    client.set_registered_model_alias(config.registered_model, tags.CHAMPION_ALIAS, version.version)
    best_summary = {
        "trial_id": winner.score.trial_id,
        "optuna_trial_number": winner.score.number,
        "mlflow_run_id": winner.mlflow_run_id,
        "config": {"model": winner.spec.model_values(), "train": winner.spec.train_values()},
        "metric": config.study.metric,
        "value": winner.score.best.value,
        "epoch": winner.score.best.epoch,
        "checkpoint": str(winner.checkpoint.path),
    }
    return {"best": best_summary, "version": version.version, "test_accuracy": test_accuracy}


def registered_version(client, model_name: str, study_run_id: str, winner: Winner):
    """The version this study already registered for this winner, or None.

    A driver killed between the registration and the study's end leaves one: `resume` moves
    the alias to it instead of registering the same champion a second time."""
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(
            f"name = '{model_name}' and run_id = '{study_run_id}'")
    except MlflowException:  # no such registered model yet
        return None
    mine = [v for v in versions if v.tags.get("trial_id") == winner.score.trial_id]
    return max(mine, key=lambda v: int(v.version)) if mine else None


def _quiet_stderr():
    """What is printed to sys.stderr meanwhile is dropped (logging handlers keep their own
    stream: a warning still shows)."""
    return contextlib.redirect_stderr(io.StringIO())


def _restore(checkpoint, scratch: Path):
    local = Path(checkpoint.to_directory(str(scratch / "checkpoint")))
    model, state = model_from_checkpoint(local)
    checkpoint_file = scratch / CHECKPOINT_FILE
    shutil.copyfile(local / CHECKPOINT_FILE, checkpoint_file)
    return model, state, checkpoint_file


def _score_on_test(model, state: dict[str, Any], source: str) -> dict[str, Any]:
    """The one touch of the test split in a study."""
    from resnet_core import data_config_from_dict
    from search.trial.single_run import evaluate_module, trained_normalisation

    data_config = data_config_from_dict(state["data_config"])
    return evaluate_module(model, data_config, split="test", device="cpu", source=source,
                           normalisation=trained_normalisation(state))


def _log_scores(client, study_run_id: str, winner: Winner, test_accuracy: float,
                test_loss: float) -> None:
    client.log_batch(study_run_id, metrics=[_metric("test_accuracy", test_accuracy),
                                            _metric("test_loss", test_loss)])
    client.set_tag(study_run_id, tags.BEST_TRIAL_ID, winner.score.trial_id)
    client.set_tag(study_run_id, tags.BEST_TRIAL_RUN_ID, winner.mlflow_run_id)
    client.log_batch(winner.mlflow_run_id, metrics=[_metric("test_accuracy", test_accuracy)])


def _log_model(mlflow, study_run_id: str, model, state: dict[str, Any], checkpoint_file: Path,
               test_accuracy: float):
    """Log the servable champion: raw pixels (N, C, H, W) 0..255 in, probabilities out.

    torch.export keeps the batch dimension dynamic only when the example batch has more
    than one image and the signature marks it -1, so the example holds two images.
    """
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    from resnet_core import PixelClassifier, data_config_from_dict, input_spec, load_data

    data = load_data(data_config_from_dict(state["data_config"]))
    spec = input_spec(state)  # the network's own standardisation (a pretrained start's)
    servable = PixelClassifier(model.float().cpu().eval(), spec.mean, spec.std).eval()
    channels, height, width = data.test.images.shape[1:]
    example = data.test.images[:2].float().numpy()
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, channels, height, width))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, data.num_classes))]))
    with mlflow.start_run(run_id=study_run_id):
        return mlflow.pytorch.log_model(
            servable, name="model", input_example=example, signature=signature,
            # Known requirements: inferring them imports the model in a subprocess (seconds),
            # and the export was checked when the example ran through torch.export.
            pip_requirements=serving_requirements(), validate_serving_input=False,
            extra_files=[str(checkpoint_file)],
            metadata={"model_config": state["model_config"], "test_accuracy": test_accuracy,
                      "class_names": list(data.class_names),
                      "input": "float32 (N, C, H, W), pixel values 0..255",
                      "output": "class probabilities (N, classes)"},
        )


def serving_requirements() -> list[str]:
    """What `mlflow models serve` needs to load the champion, pinned to this environment."""
    from importlib.metadata import version

    return [f"{package}=={version(package)}" for package in ("mlflow", "torch", "numpy")]


def _metric(key: str, value: float):
    from mlflow.entities import Metric

    return Metric(key, float(value), int(time.time() * 1000), 0)
