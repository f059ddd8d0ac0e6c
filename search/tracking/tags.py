"""Every name resnet-search writes into MLflow and Optuna, in one place.

A user follows a study's lineage in the dashboard by these names, and the
commands find studies and trials again by them; spelling one differently in two
modules would silently lose runs. Plain constants: importing this module costs
nothing (no MLflow import).

Tags of a study run (the parent):
    KIND="study", STUDY, STORAGE, STUDY_FILE, REGISTERED_MODEL, STATUS,
    BEST_TRIAL_ID, BEST_TRIAL_RUN_ID
Tags of a trial run (nested under the study run):
    KIND="trial", STUDY, TRIAL_ID, NODE_ID, OPTUNA_NUMBER, CHECKPOINT, STATUS
"""

from __future__ import annotations

PREFIX = "resnet_search."

KIND = PREFIX + "kind"  # "study" | "trial"
STUDY = PREFIX + "study"  # the study name
STORAGE = PREFIX + "storage_path"  # (study) where Ray keeps results and checkpoints
STUDY_FILE = PREFIX + "study_file"  # (study) the path of the study file
REGISTERED_MODEL = PREFIX + "registered_model"  # (study) the registry name of its champion
BEST_TRIAL_ID = "best_trial_id"  # (study) the champion's Ray trial id
BEST_TRIAL_RUN_ID = "best_trial_run_id"  # (study) the champion's trial run
TRIAL_ID = "ray.trial_id"
NODE_ID = "ray.node_id"
GPU_IDS = "ray.gpu_ids"
HOSTNAME = "hostname"
DEVICE = "device"  # (trial) where it trained: cpu, cuda:0, ...
OPTUNA_NUMBER = "optuna.trial_number"
CHECKPOINT = "checkpoint"  # (trial) the latest checkpoint's location
ERROR_FILE = "error_file"
# (trial) set when its checkpoint was torn: which file, and whether it restarted from an
# older checkpoint or from scratch.
CHECKPOINT_RESTORE = PREFIX + "checkpoint_restore"
FEASIBLE = PREFIX + "feasible"  # (trial) "true" | "false": meets every [constraints] limit
PARETO = PREFIX + "pareto_front"  # (trial) "true" on the trials of a multi-objective front
STATUS = "status"  # running | completed | pruned | diverged | failed | interrupted
# (study) "true" once a completed study's summary and report are written: a driver killed
# between its champion and those leaves STATUS completed without it, for `resume` to finish.
WRAPPED_UP = PREFIX + "wrapped_up"

# MLflow's own tags.
PARENT = "mlflow.parentRunId"
RUN_NAME = "mlflow.runName"

# Kinds and statuses (the values of KIND and STATUS).
KIND_STUDY = "study"
KIND_TRIAL = "trial"
RUNNING, COMPLETED, PRUNED, DIVERGED, FAILED, INTERRUPTED = (
    "running", "completed", "pruned", "diverged", "failed", "interrupted")
FINAL_STATUSES = (COMPLETED, PRUNED, DIVERGED, FAILED)  # a trial with one of these is over

# The registry alias that always points at a study's newest champion.
CHAMPION_ALIAS = "champion"

# Param prefixes: a trial run's params are "model.<field>" and "train.<field>"; the study
# run's are "study.", "data.", "train.", "scheduler.", "resources." and "space.".
MODEL_PARAM = "model."
TRAIN_PARAM = "train."
DATA_PARAM = "data."
STUDY_PARAM = "study."
SPACE_PARAM = "space."

# The study run's artifact of the champion's test split by class:
# {"class_names": [...], "confusion": [true class][predicted class] image counts}.
CLASS_SCORES_ARTIFACT = "test/classes.json"

# The study run's trial index (search.tracking.trial_index): one compact row per trial run.
TRIAL_INDEX_ARTIFACT = "trial_index.json"

# An Optuna user attribute naming the metric a trial was scored on (RDB storage).
OPTUNA_METRIC_ATTR = PREFIX + "metric"


def champion_uri(registered_model: str) -> str:
    """The model URI of a study's champion: `models:/NAME@champion`."""
    return f"models:/{registered_model}@{CHAMPION_ALIAS}"
