"""Getting results back: study status, the best trial, and the champion as an nn.Module.

Everything here reads the tracking store alone (plus the checkpoint artifacts
in it), so it works in a new process, from any directory, on any machine that
reaches the store. A local store (a SQLite file, artifacts in a folder) is read
without MLflow's import (search.tracking.local_store); any other through MLflow.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resnet_core import CHECKPOINT_FILE, data_config_from_dict, input_spec, model_from_checkpoint
from search.studyfile.config import ConfigError
from search.tracking import local_store, store
from search.tracking.local_store import first_of
from search.tracking.records import TrialRecord, read_study
from search.tracking.store import no_download_bar, open_study

if TYPE_CHECKING:
    from torch import nn

# The folder of a logged model that holds the files logged with it (the checkpoint).
EXTRA_FILES = "extra_files"


def study_status(name: str, tracking_uri: str | None = None) -> dict[str, Any]:
    """The study's trials with their states and metrics, in the ranking's order (best first).
    A local store is read without MLflow (search.tracking.local_store), any other through it."""
    return first_of(lambda: _status(name, *local_store.open_study(name, tracking_uri)),
                    lambda: _status(name, *open_study(name, tracking_uri)))


def _status(name: str, uri: str, client: Any, study_run: Any) -> dict[str, Any]:
    study = read_study(client, study_run)
    trials = [_trial_row(t) for t in study.by_rank()]
    return {
        "study": name,
        "tracking_uri": uri,
        "study_run_id": study.run_id,
        "status": study.status,
        "metric": study.metric,
        "mode": study.mode,
        "num_samples": study.num_samples,
        "storage_path": study.storage_path,
        "counts": study.outcome_counts(),
        "test_accuracy": study.test_accuracy,
        "registered_model": study.registered_model,
        # The study's own registered version (the alias may have moved to a newer study's).
        "champion": study.champion,
        "champion_trial_id": study.champion_trial_id,
        "best": trials[0] if trials and trials[0]["ranked"] else None,
        "trials": trials,
    }


def _trial_row(trial: TrialRecord) -> dict[str, Any]:
    return {
        "trial_id": trial.trial_id,
        "optuna_trial_number": trial.number,
        "status": trial.status,
        "ranked": trial.ranked,
        "value": trial.value,
        "best_epoch": trial.best_epoch,
        "val_loss_at_best": trial.val_loss_at_best,
        "epochs": trial.epochs,
        "val_accuracy": trial.metrics.get("val_accuracy"),
        "best_val_accuracy": trial.metrics.get("best_val_accuracy"),
        "val_loss": trial.metrics.get("val_loss"),
        "model": trial.label,
        "optimizer": trial.optimizer,
        "lr": trial.lr,
        "parameters": trial.parameters,
        "flops": trial.flops,
        "mlflow_run_id": trial.run_id,
        "checkpoint": trial.checkpoint,
        "node_id": trial.node_id,
    }


def download_model_checkpoint(model_uri: str, tracking_uri: str | None, destination: Path) -> Path:
    """Fetch the weights-only checkpoint stored inside a logged/registered model."""
    uri = store.resolve_tracking_uri(tracking_uri)

    def copied() -> Path:  # from a local store's folder, without MLflow
        target = destination / EXTRA_FILES / CHECKPOINT_FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local_checkpoint(model_uri, uri), target)
        return target

    return first_of(copied, lambda: _downloaded_checkpoint(model_uri, uri, destination))


def local_checkpoint(model_uri: str, uri: str) -> Path:
    """The checkpoint file of a registered model in a local store's folder (read in place);
    local_store.Unsupported where MLflow must find it."""
    client = local_store.LocalClient.open(uri)
    try:
        path = client.model_folder(model_uri) / EXTRA_FILES / CHECKPOINT_FILE
    finally:
        client.close()
    if not path.is_file():
        raise local_store.Unsupported(f"{path} is missing")  # MLflow's path says it its way
    return path


def _downloaded_checkpoint(model_uri: str, uri: str, destination: Path) -> Path:
    import mlflow  # the whole of mlflow (~1 s more than its client): only to download a model

    # Not MLflow's retries against a server that does not answer (minutes): one line now.
    store.check_tracking_reachable(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        with no_download_bar():
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=f"{model_uri.rstrip('/')}/{EXTRA_FILES}", dst_path=str(destination))
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
    uri = store.resolve_tracking_uri(tracking_uri)
    try:  # a local store's file, loaded where it lies (weights only: nothing is run)
        return model_from_checkpoint(local_checkpoint(model_uri, uri))
    except local_store.Unsupported:
        pass
    with tempfile.TemporaryDirectory(prefix="resnet-search-model-") as scratch:
        path = _downloaded_checkpoint(model_uri, uri, Path(scratch))
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
    champion, test_accuracy = first_of(
        lambda: _champion(name, *local_store.open_study(name, tracking_uri)),
        lambda: _champion(name, *open_study(name, tracking_uri)))
    model, state = load_model_uri(champion["uri"], tracking_uri)
    config = {
        "model": state["model_config"],
        "train": state.get("train_config"),
        "data": state.get("data_config"),
        "test_accuracy": test_accuracy,
        "model_uri": champion["uri"],
    }
    # From the checkpoint: a user's image folder may not be on the machine that loads it.
    spec = input_spec(state)
    config["mean"], config["std"], config["class_names"] = spec.mean, spec.std, spec.class_names
    return model, config


def _champion(name: str, uri: str, client: Any, study_run: Any
              ) -> tuple[dict[str, Any], float | None]:
    """(the study's registered champion, its test accuracy); ConfigError before it has one."""
    study = read_study(client, study_run, trials=False)  # the champion needs no trial runs
    return study.champion or store.registered_champion(client, study_run, name), \
        study.test_accuracy


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
    # torch and the data loaders: only `evaluate` pays them, not `status` or `best`.
    from search.trial.single_run import evaluate_module, trained_normalisation

    model, state = load_model_uri(model_uri, tracking_uri)
    data_config = data_config_from_dict(state.get("data_config") or {})
    return evaluate_module(model, data_config, dataset=dataset, root=root, split=split,
                           device=device, source=model_uri,
                           normalisation=trained_normalisation(state))
