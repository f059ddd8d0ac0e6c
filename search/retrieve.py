"""Getting results back: study status, the best trial, and the champion as an nn.Module.

Everything here reads the tracking store alone (plus the checkpoint artifacts
in it), so it works in a new process, from any directory, on any machine that
reaches the store.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from torch import nn

from resnet_core.checkpoint import CHECKPOINT_FILE, model_from_checkpoint
from search.champion import CHAMPION_ALIAS
from search.config import ConfigError
from search.tracking import open_study


def study_status(name: str, tracking_uri: str | None = None) -> dict[str, Any]:
    """The study's trials with their states and metrics, best first."""
    from search import tracking

    uri, client, study_run = open_study(name, tracking_uri)
    params = study_run.data.params
    metric, mode = params.get("study.metric", "val_accuracy"), params.get("study.mode", "max")
    rank_by = "best_val_accuracy" if metric == "val_accuracy" else metric
    trials = []
    for run in tracking.trial_runs(client, study_run):
        tags, metrics = run.data.tags, run.data.metrics
        trials.append({
            "trial_id": tags.get(tracking.TRIAL_ID),
            "optuna_trial_number": int(tags.get(tracking.OPTUNA_NUMBER, -1)),
            "status": tags.get(tracking.STATUS, "unknown"),
            "epochs": int(metrics.get("epoch", 0)),
            "val_accuracy": metrics.get("val_accuracy"),
            "best_val_accuracy": metrics.get("best_val_accuracy"),
            "val_loss": metrics.get("val_loss"),
            "model": _model_label(run.data.params),
            "optimizer": run.data.params.get("train.optimizer"),
            "lr": _float(run.data.params.get("train.lr")),
            "mlflow_run_id": run.info.run_id,
            "checkpoint": tags.get(tracking.CHECKPOINT),
            "node_id": tags.get(tracking.NODE_ID),
        })
    scored = [t for t in trials if t.get(rank_by) is not None and t["status"] != "diverged"]
    scored.sort(key=lambda t: t[rank_by], reverse=mode == "max")
    unscored = [t for t in trials if t not in scored]
    ordered = scored + sorted(unscored, key=lambda t: t["optuna_trial_number"])
    counts: dict[str, int] = {}
    for t in trials:
        counts[t["status"]] = counts.get(t["status"], 0) + 1
    return {
        "study": name,
        "tracking_uri": uri,
        "study_run_id": study_run.info.run_id,
        "status": study_run.data.tags.get(tracking.STATUS, "unknown"),
        "metric": metric,
        "mode": mode,
        "num_samples": int(params.get("study.num_samples", 0)),
        "storage_path": study_run.data.tags.get(tracking.STORAGE),
        "counts": counts,
        "test_accuracy": study_run.data.metrics.get("test_accuracy"),
        "registered_model": study_run.data.tags.get("resnet_search.registered_model"),
        "best": scored[0] if scored else None,
        "trials": ordered,
    }


def _model_label(params: dict[str, str]) -> str:
    family, depth = params.get("model.family", "?"), params.get("model.depth", "?")
    if family == "wrn":
        return f"wrn-{depth}-{params.get('model.width', '1')}"
    block = params.get("model.block")
    return f"{family}-{depth}" + (f" ({block})" if block and block != "basic" else "")


def _float(value: str | None) -> float | None:
    return float(value) if value is not None else None


def download_model_checkpoint(model_uri: str, tracking_uri: str | None, destination: Path) -> Path:
    """Fetch the weights-only checkpoint stored inside a logged/registered model."""
    import mlflow

    from search import tracking

    uri = tracking.resolve_tracking_uri(tracking_uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=f"{model_uri.rstrip('/')}/extra_files",
                                                    dst_path=str(destination))
    except Exception as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"model {model_uri} not found in {uri}: {first}") from None
    path = Path(local) / CHECKPOINT_FILE
    if not path.is_file():
        raise ConfigError(f"model {model_uri} has no {CHECKPOINT_FILE}; it was not logged by "
                          f"resnet-search")
    return path


def load_model_uri(model_uri: str, tracking_uri: str | None = None) -> tuple[nn.Module, dict]:
    """(model, checkpoint state) for `models:/NAME@champion`, `runs:/...` or `models:/m-...`."""
    with tempfile.TemporaryDirectory(prefix="resnet-search-model-") as scratch:
        path = download_model_checkpoint(model_uri, tracking_uri, Path(scratch))
        return model_from_checkpoint(path)


def load_best(name: str, tracking_uri: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """The champion of a study as a ready nn.Module (eval mode) and its configuration.

    Returns `(model, config)` where config holds `model`, `train` and `data`
    (the resolved trial) and `test_accuracy`.
    """
    _, client, study_run = open_study(name, tracking_uri)
    registered = study_run.data.tags.get("resnet_search.registered_model") or name
    model, state = load_model_uri(f"models:/{registered}@{CHAMPION_ALIAS}", tracking_uri)
    config = {
        "model": state["model_config"],
        "train": state.get("train_config"),
        "data": state.get("data_config"),
        "test_accuracy": study_run.data.metrics.get("test_accuracy"),
        "model_uri": f"models:/{registered}@{CHAMPION_ALIAS}",
    }
    return model, config


def export_best_checkpoint(name: str, destination: Path, tracking_uri: str | None = None) -> Path:
    """Copy the best checkpoint: the champion's, else the best trial's while the study runs."""
    _, client, study_run = open_study(name, tracking_uri)
    registered = study_run.data.tags.get("resnet_search.registered_model") or name
    destination = Path(destination)
    target = destination / CHECKPOINT_FILE if destination.is_dir() else destination
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="resnet-search-export-") as scratch:
        try:
            source = download_model_checkpoint(f"models:/{registered}@{CHAMPION_ALIAS}",
                                               tracking_uri, Path(scratch))
        except ConfigError:
            best = study_status(name, tracking_uri)["best"]
            if not best or not best.get("checkpoint"):
                raise ConfigError(f"study {name!r} has no checkpoint yet") from None
            source = Path(best["checkpoint"]) / CHECKPOINT_FILE
        shutil.copyfile(source, target)
    return target


def evaluate_model_uri(model_uri: str, *, tracking_uri: str | None = None,
                       dataset: str | None = None, root: str | None = None, split: str = "test",
                       device: str | None = None) -> dict[str, Any]:
    from search.single_run import data_config_from_dict, evaluate_module

    model, state = load_model_uri(model_uri, tracking_uri)
    data_config = data_config_from_dict(state.get("data_config") or {})
    return evaluate_module(model, data_config, dataset=dataset, root=root, split=split,
                           device=device, source=model_uri)
