"""A study as MLflow holds it, read into typed records: the study run and its trials.

Every reader of a study (status, best, studies, report, the study run's summary, load_best,
the Pareto front) goes through this module, as Optuna's readers go through FrozenTrial: the
names MLflow keeps ("section.field" params, tags), how outcomes are counted, how a trial's
network is named and which way the metric improves are decided here and in
search.tracking.ranking, never by a reader.

    read_study(client, study_run)      the trial runs (from the study's trial index), ranked
                                       by the one ranking: what status, best, studies and the
                                       summary show
    collect_study(client, study_run)   that, plus the per-epoch history of the trials whose
                                       curves are drawn (all, or the best and a sample), costs
                                       computed where a run lacks them, and the champion's
                                       classes: the report
"""

from __future__ import annotations

import ast
import math
import random
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from resnet_core import ConfigValueError, DataConfig, ModelConfig, NetworkFamily, family
from search.tracking import ranking, tags
from search.tracking.store import (
    champion_class_scores,
    rank_runs,
    study_champion,
    study_objective,
)
from search.tracking.trial_index import current_trial_runs, no_gc_passes

HISTORY_KEYS = ("val_accuracy", "val_loss", "train_loss")
# The report reads the per-epoch history (a request per trial and metric) of every trial up to
# CURVES_BEST + CURVES_SAMPLED; past that, of the best CURVES_BEST and a seeded sample of
# CURVES_SAMPLED others: 10,000 trials' curves take minutes to read and no page shows them.
CURVES_BEST = 50
CURVES_SAMPLED = 150
CURVES_SEED = 0
# Run ids per bulk history query: well under SQLite's bound on a statement's variables.
HISTORY_BATCH = 500
# The order outcomes are listed in, wherever a study's trials are counted.
OUTCOMES = (tags.COMPLETED, tags.PRUNED, tags.DIVERGED, tags.FAILED, tags.RUNNING,
            tags.INTERRUPTED)
# A trial's params come in two sections; a [space] key names a field of one of them.
TRIAL_SECTIONS = (tags.MODEL_PARAM, tags.TRAIN_PARAM)


def parse_param(text: str) -> Any:
    """An MLflow param (always a string) back as the int, float, None or string it was."""
    if text == "None":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def count_outcomes(statuses: Iterable[str]) -> dict[str, int]:
    """Trials by outcome (completed, pruned, ...): the one count every reader shows."""
    return dict(Counter(statuses))


def model_label(params: Mapping[str, str]) -> str:
    """A trial's network as a user names it (wrn-16-2, resnet-20, resnet-164 (bottleneck)),
    from its "model." params; the family's registry entry knows its name format."""
    def model(key: str) -> str | None:
        return params.get(tags.MODEL_PARAM + key)

    name, depth = model("family") or "?", model("depth") or "?"
    entry = _registered(name)
    if entry is None:  # a family this installation does not have: its plain name
        return f"{name}-{depth}"
    return entry.model_label(depth, model("width") or "1", model("block"), model("bn_position"))


def _registered(name: str) -> NetworkFamily | None:
    try:
        return family(name)
    except ConfigValueError:
        return None


@dataclass
class TrialRecord:
    """One trial run: its outcome, score, settings and costs.

    `params` are the run's MLflow params as written ("model.depth" -> "20"); read them
    through the attributes and `setting`, which know the names.
    """

    number: int  # Optuna trial number
    run_id: str
    status: str  # tags.COMPLETED, PRUNED, DIVERGED, FAILED, RUNNING or INTERRUPTED
    params: dict[str, str]
    value: float | None  # best value of the study metric over its epochs; None: unranked
    rank: int | None  # 0 = the study's best trial (search.tracking.ranking's order)
    best_epoch: int | None
    start_ms: int
    end_ms: int | None  # the run's end; with histories, a running trial's last epoch
    history: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    parameters: int | None = None
    flops: int | None = None
    trial_id: str = ""  # Ray's trial id
    val_loss_at_best: float | None = None
    feasible: bool = True  # meets every [constraints] limit
    metrics: dict[str, float] = field(default_factory=dict)  # the latest value of each
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def ranked(self) -> bool:
        return self.rank is not None

    @property
    def finished(self) -> bool:
        """Over (completed, pruned, diverged, failed) and its run ended."""
        return self.status in tags.FINAL_STATUSES and self.end_ms is not None

    def setting(self, key: str) -> str | None:
        """The trial's value of a model or train field (a [space] key) as MLflow keeps it."""
        return next((self.params[p + key] for p in TRIAL_SECTIONS if p + key in self.params), None)

    @property
    def family(self) -> str | None:
        return self.params.get(tags.MODEL_PARAM + "family")

    @property
    def network_family(self) -> NetworkFamily | None:
        """The family's registry entry; None for one this installation does not have."""
        return _registered(self.family or "?")

    @property
    def label(self) -> str:
        """The network as a user names it: `wrn-16-4`, `resnet-164 (bottleneck)`."""
        return model_label(self.params)

    @property
    def model_name(self) -> str:
        """The network's name alone (`wrn-16-4`, `resnet-164`), as resnet_core parses it."""
        depth = self.params.get(tags.MODEL_PARAM + "depth", "?")
        entry = self.network_family
        if entry is None:
            return f"{self.family or '?'}-{depth}"
        return entry.model_name(depth, self.params.get(tags.MODEL_PARAM + "width", "1"))

    @property
    def optimizer(self) -> str | None:
        return self.params.get(tags.TRAIN_PARAM + "optimizer")

    @property
    def lr(self) -> float | None:
        return _float(self.params.get(tags.TRAIN_PARAM + "lr"))

    @property
    def dropout(self) -> float | None:
        return _float(self.params.get(tags.MODEL_PARAM + "dropout"))

    @property
    def epochs(self) -> int:
        """Epochs reported so far."""
        return int(self.metrics.get("epoch", 0))

    @property
    def latency_ms(self) -> float | None:
        return self.metrics.get("latency_ms")

    @property
    def checkpoint(self) -> str | None:
        return self.tags.get(tags.CHECKPOINT)

    @property
    def node_id(self) -> str | None:
        return self.tags.get(tags.NODE_ID)


@dataclass
class StudyRecord:
    """The study run and its trials (in trial order)."""

    name: str
    run_id: str
    status: str
    metric: str
    mode: str  # "max" or "min": search.tracking.ranking.direction's answer
    dataset: str
    start_ms: int
    searched: dict[str, str]  # [space] key -> its domain as the study file wrote it
    trials: list[TrialRecord]
    champion: dict[str, Any] | None = None  # tracking.study_champion: the study's own version
    test_accuracy: float | None = None
    # The champion's test split by class (tags.CLASS_SCORES_ARTIFACT), where it was logged.
    classes: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    experiment_id: str = ""
    end_ms: int | None = None
    num_samples: int = 0  # trials the study file asked for
    objectives: tuple[str, ...] = ()  # a multi-objective study's: the metric, then costs
    storage_path: str | None = None
    registered_model: str | None = None
    champion_trial_id: str | None = None
    # The study run's other settings ("resources.cpus_per_trial" -> "2"), as MLflow keeps them.
    settings: dict[str, str] = field(default_factory=dict)
    curves_note: str | None = None  # which trials' histories were read, where not all were

    @property
    def value_name(self) -> str:
        return ranking.best_metric_name(self.metric)

    def outcome_counts(self) -> dict[str, int]:
        """Trials by outcome, in OUTCOMES' order (any other status last)."""
        counts = count_outcomes(t.status for t in self.trials)
        order = [o for o in OUTCOMES if o in counts] + sorted(set(counts) - set(OUTCOMES))
        return {o: counts[o] for o in order}

    def scored(self) -> list[TrialRecord]:
        """Ranked trials (a finite score, not diverged), in trial order."""
        return [t for t in self.trials if t.ranked]

    def ranked(self) -> list[TrialRecord]:
        """Ranked trials, best first."""
        return sorted(self.scored(), key=lambda t: t.rank)

    def by_rank(self) -> list[TrialRecord]:
        """Every trial in the one ranking's order: ranked best first, then the rest by number."""
        rest = sorted((t for t in self.trials if not t.ranked), key=lambda t: (t.number, t.trial_id))
        return self.ranked() + rest

    def best(self) -> TrialRecord | None:
        ranked = self.ranked()
        return ranked[0] if ranked else None

    def better(self, values: Iterable[float]) -> float:
        """The best of some values of the study metric, in its direction."""
        return (max if self.mode == "max" else min)(values)

    def setting(self, key: str, default: str | None = None) -> str | None:
        """A setting of the study run by its MLflow name ("resources.gpus_per_trial")."""
        return self.settings.get(key, default)


# ---------------------------------------------------------------- reading MLflow


def read_study(client: Any, study_run: Any, *, trials: bool = True, classes: bool = False,
               runs: list[Any] | None = None) -> StudyRecord:
    """The study run and (`trials`) its trial runs, ranked by the one ranking.

    The trial runs are the study's trial index and the runs changed since it
    (search.tracking.trial_index), or `runs` where the caller has them already.
    `classes=True` reads the champion's test split by class, once there is a champion.
    """
    record = _study_record(client, study_run)
    if classes and record.champion is not None:
        record.classes = champion_class_scores(client, record.run_id)
    if trials:
        with no_gc_passes():
            runs = current_trial_runs(client, study_run) if runs is None else runs
            for place, (score, run) in enumerate(rank_runs(study_run, runs)):
                record.trials.append(_trial_record(run, score, place if score.ranked else None,
                                                   record.status))
            record.trials.sort(key=lambda t: (t.number, t.start_ms))
    return record


def collect_study(client: Any, study_run: Any, *, best: int = CURVES_BEST,
                  sampled: int = CURVES_SAMPLED) -> StudyRecord:
    """Everything the report shows: read_study, the per-epoch histories of the trials whose
    curves it draws (`curve_trials`), costs, and the champion's classes."""
    record = read_study(client, study_run, classes=True)
    chosen, record.curves_note = curve_trials(record, best, sampled)
    _read_histories(client, chosen)
    _fill_costs(record)
    return record


def curve_trials(record: StudyRecord, best: int = CURVES_BEST, sampled: int = CURVES_SAMPLED,
                 seed: int = CURVES_SEED) -> tuple[list[TrialRecord], str | None]:
    """(the trials whose curves are drawn, a note saying which): every trial, or the best
    `best` in the ranking's order and `sampled` of the others drawn with `seed` (the same
    trials on every report of an unchanged study)."""
    trials = record.by_rank()
    if len(trials) <= best + sampled:
        return trials, None
    rest = trials[best:]
    drawn = sorted(random.Random(seed).sample(rest, sampled), key=lambda t: (t.number, t.trial_id))
    kinds = ", ".join(f"{n:,} {o}" for o, n in count_outcomes(t.status for t in drawn).items())
    return trials[:best] + drawn, (
        f"Learning curves of the best {best} trials and of {sampled} of the other {len(rest):,} "
        f"({kinds}), drawn at random with seed {seed}.")


def _read_histories(client: Any, trials: list[TrialRecord]) -> None:
    """The per-epoch metrics of these trials: one query per metric on a SQL store (MLflow's
    SqlAlchemyStore.get_metric_history_bulk), where a request per trial and metric cost
    ~13 s for 200 trials on a loaded 2-core machine; a request each on a tracking server,
    whose client has no bulk read."""
    bulk = getattr(getattr(getattr(client, "_tracking_client", None), "store", None),
                   "get_metric_history_bulk", None)
    if bulk is None or not trials:
        for trial in trials:
            _read_history(client, trial)
        return
    by_run = {trial.run_id: trial for trial in trials}
    run_ids = list(by_run)
    for key in HISTORY_KEYS:
        steps: dict[str, dict[int, float]] = {run_id: {} for run_id in run_ids}
        for start in range(0, len(run_ids), HISTORY_BATCH):  # SQL's bound on an IN list
            for point in bulk(run_ids[start:start + HISTORY_BATCH], key, max_results=2**62):
                if math.isfinite(point.value):  # the last value of a step wins, as below
                    steps[point.run_id][point.step] = point.value
        for run_id, trial in by_run.items():
            trial.history[key] = sorted(steps[run_id].items())
    for trial in trials:
        if trial.end_ms is None:  # running: its end so far is its last epoch's
            trial.end_ms = max((m.timestamp for m in client.get_metric_history(trial.run_id, "epoch")),
                               default=None)


def _read_history(client: Any, trial: TrialRecord) -> None:
    """The trial's per-epoch metrics (a request per metric); a running trial's end: its last epoch."""
    for key in HISTORY_KEYS:
        points = client.get_metric_history(trial.run_id, key)
        trial.history[key] = sorted({m.step: m.value for m in points if math.isfinite(m.value)}.items())
    if trial.end_ms is None:
        trial.end_ms = max((m.timestamp for m in client.get_metric_history(trial.run_id, "epoch")),
                           default=None)


def _study_record(client: Any, study_run: Any) -> StudyRecord:
    params, run_tags, info = study_run.data.params, study_run.data.tags, study_run.info
    metric, mode = study_objective(study_run)
    test_accuracy = study_run.data.metrics.get("test_accuracy")
    return StudyRecord(
        name=run_tags.get(tags.STUDY, info.run_name or "?"), run_id=info.run_id,
        status=run_tags.get(tags.STATUS, "unknown"), metric=metric, mode=mode,
        dataset=params.get(tags.DATA_PARAM + "dataset", "digits"), start_ms=info.start_time or 0,
        searched={k.removeprefix(tags.SPACE_PARAM): v for k, v in params.items()
                  if k.startswith(tags.SPACE_PARAM)},
        trials=[],
        # The registry is asked once the champion is scored: registration follows the test score.
        champion=study_champion(client, study_run) if test_accuracy is not None else None,
        test_accuracy=test_accuracy, experiment_id=info.experiment_id, end_ms=info.end_time,
        num_samples=int(params.get(tags.STUDY_PARAM + "num_samples", 0)),
        objectives=_objectives(params.get(tags.STUDY_PARAM + "objectives", "()")),
        storage_path=run_tags.get(tags.STORAGE), registered_model=run_tags.get(tags.REGISTERED_MODEL),
        champion_trial_id=run_tags.get(tags.BEST_TRIAL_ID),
        settings={k: v for k, v in params.items() if not k.startswith(tags.SPACE_PARAM)},
    )


def _objectives(recorded: str) -> tuple[str, ...]:
    return tuple(ast.literal_eval(recorded)) if recorded.startswith(("(", "[")) else ()


def _trial_record(run: Any, score: ranking.TrialScore, rank: int | None,
                  study_status: str) -> TrialRecord:
    metrics, params, best = run.data.metrics, run.data.params, score.best
    status = score.status
    if status == tags.RUNNING and study_status == tags.INTERRUPTED:
        status = tags.INTERRUPTED  # stopped with the study: `resume` goes on with it
    return TrialRecord(
        number=score.number, run_id=run.info.run_id, status=status, params=dict(params),
        value=best.value if rank is not None else None, rank=rank,
        best_epoch=best.epoch if rank is not None else None,
        start_ms=run.info.start_time or 0, end_ms=run.info.end_time,
        parameters=_int(metrics.get("parameters", params.get(tags.MODEL_PARAM + "parameters"))),
        flops=_int(metrics.get("flops", params.get(tags.MODEL_PARAM + "flops"))),
        trial_id=score.trial_id, val_loss_at_best=best.val_loss if best else None,
        feasible=score.feasible, metrics=dict(metrics), tags=dict(run.data.tags),
    )


def _fill_costs(record: StudyRecord) -> None:
    """Parameters and FLOPs from the model params where the trial run does not carry them."""
    missing = [t for t in record.trials if t.parameters is None or t.flops is None]
    if not missing:
        return
    # torch (seconds to import): only the report computes a cost, and only for runs that did not
    # log one.
    from resnet_core import architecture_cost

    known = {f.name for f in fields(ModelConfig)}
    try:
        channels, height, width = DataConfig(dataset=record.dataset).image_shape
    except (ValueError, KeyError):
        channels, height, width = 3, 32, 32
    classes = {"cifar100": 100}.get(record.dataset, 10)
    for trial in missing:
        model = {k.removeprefix(tags.MODEL_PARAM): parse_param(v) for k, v in trial.params.items()
                 if k.startswith(tags.MODEL_PARAM)}
        model = {k: v for k, v in model.items() if k in known}  # other params: not the network
        try:
            trial.parameters, trial.flops = architecture_cost(
                {**model, "num_classes": classes, "in_channels": channels}, (height, width))
        except (TypeError, ValueError) as error:
            record.notes.append(f"trial {trial.number}: no cost ({error})")


def _int(value: Any) -> int | None:
    try:
        return int(float(value)) if value is not None else None
    except ValueError:
        return None


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
