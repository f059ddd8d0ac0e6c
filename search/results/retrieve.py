"""Getting results back: study status, the best trial, and the champion as an nn.Module.

Everything here reads the tracking store alone (plus the checkpoint artifacts
in it), so it works in a new process, from any directory, on any machine that
reaches the store.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resnet_core import CHECKPOINT_FILE, model_from_checkpoint
from search.studyfile.config import ConfigError
from search.tracking import ranking, tags
from search.tracking import store as tracking
from search.tracking.store import open_study
from search.tracking.summary import model_label

if TYPE_CHECKING:
    from torch import nn


def study_status(name: str, tracking_uri: str | None = None) -> dict[str, Any]:
    """The study's trials with their states and metrics, in the ranking's order (best first)."""
    uri, client, study_run = open_study(name, tracking_uri)
    metric, mode = tracking.study_objective(study_run)
    trials = [_trial_row(score, run) for score, run in tracking.ranked_trial_runs(client, study_run)]
    run_tags = study_run.data.tags
    counts: dict[str, int] = {}
    for t in trials:
        if t["status"] == tags.RUNNING and run_tags.get(tags.STATUS) == tags.INTERRUPTED:
            t["status"] = tags.INTERRUPTED  # stopped with the study: `resume` goes on with it
        counts[t["status"]] = counts.get(t["status"], 0) + 1
    return {
        "study": name,
        "tracking_uri": uri,
        "study_run_id": study_run.info.run_id,
        "status": run_tags.get(tags.STATUS, "unknown"),
        "metric": metric,
        "mode": mode,
        "num_samples": int(study_run.data.params.get("study.num_samples", 0)),
        "storage_path": run_tags.get(tags.STORAGE),
        "counts": counts,
        "test_accuracy": study_run.data.metrics.get("test_accuracy"),
        "registered_model": run_tags.get(tags.REGISTERED_MODEL),
        # The study's own registered version (the alias may have moved to a newer study's).
        "champion": tracking.study_champion(client, study_run),
        "champion_trial_id": run_tags.get(tags.BEST_TRIAL_ID),
        "best": trials[0] if trials and trials[0]["ranked"] else None,
        "trials": trials,
    }


def _trial_row(score: ranking.TrialScore, run) -> dict[str, Any]:
    run_tags, metrics, params = run.data.tags, run.data.metrics, run.data.params
    return {
        "trial_id": score.trial_id,
        "optuna_trial_number": score.number,
        "status": score.status,
        "ranked": score.ranked,
        "value": score.best.value if score.best else None,
        "best_epoch": score.best.epoch if score.best else None,
        "val_loss_at_best": score.best.val_loss if score.best else None,
        "epochs": int(metrics.get("epoch", 0)),
        "val_accuracy": metrics.get("val_accuracy"),
        "best_val_accuracy": metrics.get("best_val_accuracy"),
        "val_loss": metrics.get("val_loss"),
        "model": model_label(params),
        "optimizer": params.get("train.optimizer"),
        "lr": _float(params.get("train.lr")),
        "parameters": _int(params.get("model.parameters")),
        "flops": _int(params.get("model.flops")),
        "mlflow_run_id": run.info.run_id,
        "checkpoint": run_tags.get(tags.CHECKPOINT),
        "node_id": run_tags.get(tags.NODE_ID),
    }


def _float(value: str | None) -> float | None:
    return float(value) if value is not None else None


def _int(value: str | None) -> int | None:
    return int(value) if value is not None else None


def download_model_checkpoint(model_uri: str, tracking_uri: str | None, destination: Path) -> Path:
    """Fetch the weights-only checkpoint stored inside a logged/registered model."""
    import mlflow

    uri = tracking.resolve_tracking_uri(tracking_uri)
    # Not MLflow's retries against a server that does not answer (minutes): one line now.
    tracking.check_tracking_reachable(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        with _no_download_bar():
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=f"{model_uri.rstrip('/')}/extra_files", dst_path=str(destination))
    except Exception as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"model {model_uri} not found in {uri}: {first}") from None
    path = Path(local) / CHECKPOINT_FILE
    if not path.is_file():
        raise ConfigError(f"model {model_uri} has no {CHECKPOINT_FILE}; it was not logged by "
                          f"resnet-search")
    return path


PROGRESS_BAR_VARIABLE = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


@contextmanager
def _no_download_bar() -> Iterator[None]:
    """MLflow draws a progress bar on stderr for every download unless its variable says no:
    no output of a library call such as load_best. Off for this call only, and only where
    the caller did not set the variable; the process's environment is then as it was."""
    if PROGRESS_BAR_VARIABLE in os.environ:
        yield
        return
    os.environ[PROGRESS_BAR_VARIABLE] = "false"
    try:
        yield
    finally:
        os.environ.pop(PROGRESS_BAR_VARIABLE, None)


def load_model_uri(model_uri: str, tracking_uri: str | None = None) -> tuple[nn.Module, dict]:
    """(model, checkpoint state) for `models:/NAME@champion`, `runs:/...` or `models:/m-...`."""
    with tempfile.TemporaryDirectory(prefix="resnet-search-model-") as scratch:
        path = download_model_checkpoint(model_uri, tracking_uri, Path(scratch))
        return model_from_checkpoint(path)


def load_best(name: str, tracking_uri: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """The champion of a study as a ready nn.Module (eval mode) and its configuration.

    Returns `(model, config)` where config holds `model`, `train` and `data`
    (the resolved trial), `test_accuracy`, `model_uri`, and `mean` and `std`: the network
    takes images standardised as in training, `(pixels / 255 - mean) / std` per channel;
    `resnet_core.PixelClassifier(model, config["mean"], config["std"])` takes 0..255 pixels
    and returns probabilities, as the served model does; `class_names[i]` names output i
    (a folder dataset's class folders).
    """
    from resnet_core import input_spec

    _, client, study_run = open_study(name, tracking_uri)
    champion = tracking.registered_champion(client, study_run, name)
    model, state = load_model_uri(champion["uri"], tracking_uri)
    config = {
        "model": state["model_config"],
        "train": state.get("train_config"),
        "data": state.get("data_config"),
        "test_accuracy": study_run.data.metrics.get("test_accuracy"),
        "model_uri": champion["uri"],
    }
    # From the checkpoint: a user's image folder may not be on the machine that loads it.
    spec = input_spec(state)
    config["mean"], config["std"], config["class_names"] = spec.mean, spec.std, spec.class_names
    return model, config


def export_best_checkpoint(name: str, destination: str | Path, tracking_uri: str | None = None,
                           status: dict[str, Any] | None = None) -> Path:
    """Copy the best checkpoint: the champion's, else the best trial's while the study runs.
    `destination`: a file, or a folder (one that exists, or a path ending in '/').
    `status`: the study's `study_status`, when the caller has it already."""
    status = status or study_status(name, tracking_uri)
    champion = status["champion"]
    folder = str(destination).endswith("/") or Path(destination).is_dir()
    target = Path(destination) / CHECKPOINT_FILE if folder else Path(destination)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="resnet-search-export-") as scratch:
        try:
            if champion is None:
                raise ConfigError(f"study {name!r} has no registered champion yet")
            source = download_model_checkpoint(champion["uri"], tracking_uri, Path(scratch))
        except ConfigError:
            best = status["best"]
            if not best or not best.get("checkpoint"):
                raise ConfigError(f"study {name!r} has no checkpoint yet") from None
            source = Path(best["checkpoint"]) / CHECKPOINT_FILE
        shutil.copyfile(source, target)
    return target


def evaluate_model_uri(model_uri: str, *, tracking_uri: str | None = None,
                       dataset: str | None = None, root: str | None = None, split: str = "test",
                       device: str | None = None) -> dict[str, Any]:
    from resnet_core import data_config_from_dict
    from search.trial.single_run import evaluate_module

    model, state = load_model_uri(model_uri, tracking_uri)
    data_config = data_config_from_dict(state.get("data_config") or {})
    return evaluate_module(model, data_config, dataset=dataset, root=root, split=split,
                           device=device, source=model_uri)
