"""The Optuna searcher: seeded TPE (or random) over the define-by-run space.

By default the Optuna study lives in memory (Ray saves it with the experiment).
With `[study] optuna_storage = "postgresql://..."` it lives in a database, so a
later study can warm-start from an earlier one: `optuna_study` names the Optuna
study to continue (default: the study's own name), and TPE sees its trials.

A password never needs to be written into the study file: PostgreSQL reads
`PGPASSWORD` / `~/.pgpass`, and `${VAR}` in the URL is taken from the environment
when connecting. Ray pickles the searcher with its experiment; the storage
pickles its URL as written (`${VAR}` unexpanded) and reconnects on restore.
"""

from __future__ import annotations

import os
import re
import sys

from optuna.storages import RDBStorage
from ray.tune.search.optuna import OptunaSearch

from search.space.sampler import InfeasibleArchitecture, SearchSpace, constraint_violations
from search.studyfile.config import COSTS, ConfigError, StudyConfig
from search.tracking import tags
from search.tracking.store import redact_url
from search.trial.spec import TrialSpec

METRIC_ATTR = tags.OPTUNA_METRIC_ATTR
# Networks over a [constraints] limit the searcher may reject in a row before giving up.
MAX_REJECTIONS = 500
CONNECT_TIMEOUT_S = 10
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def startup_trials(num_samples: int) -> int:
    """TPE's `n_startup_trials`: random proposals until this many trials have *finished*.

    About a third of the study, 3 to 10 trials. Trials proposed while those run are random
    too, so with c trials at once about 2c more start at random: lowering the count by
    them was measured and made TPE worse (final best 0.9795 against 0.9845 over 5 seeds,
    benchmarks/SEARCH.md), so it stays.
    """
    return max(3, min(10, num_samples // 3))


def build_sampler(config: StudyConfig):
    """The study's Optuna sampler."""
    import warnings

    import optuna

    # TPE's `group` option is marked experimental; every study would print that warning.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

    seed = config.study.seed
    if config.study.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # multivariate + group model the conditional space jointly; constant_liar keeps
    # concurrent trials from being proposed the same point. Networks over a [constraints]
    # limit carry Optuna constraints (`Trial.set_constraint`), which TPE learns to avoid.
    return optuna.samplers.TPESampler(
        seed=seed, multivariate=True, group=True, constant_liar=True,
        n_startup_trials=startup_trials(config.study.num_samples),
    )


def set_constraints(ot_trial, violations: list[float]) -> None:
    """Tell Optuna how far a trial is over each limit (> 0: infeasible), once per trial."""
    for name, value in zip(COSTS, violations, strict=True):
        ot_trial.set_constraint(name, value)


# ---------------------------------------------------------------- Optuna RDB storage


def expand_url(url: str) -> str:
    """`${VAR}` in a storage URL, from the environment; a missing variable is an error."""
    def value(match: re.Match) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise ConfigError(f"[study] optuna_storage: environment variable {name} is not set "
                              f"(the URL refers to ${{{name}}})")
        return os.environ[name]

    return _ENV_REFERENCE.sub(value, url)


class StudyStorage(RDBStorage):
    """RDBStorage that pickles its URL as written (no expanded secrets) and reconnects."""

    def __init__(self, url: str) -> None:
        self.url_as_written = url
        connect_args = {"connect_timeout": CONNECT_TIMEOUT_S} if url.startswith("postgres") else {}
        super().__init__(expand_url(url),
                         engine_kwargs={"pool_pre_ping": True, "connect_args": connect_args})

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["url"] = self.url_as_written
        return state

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        state["url"] = expand_url(state["url_as_written"])
        super().__setstate__(state)


def optuna_study_name(config: StudyConfig) -> str:
    return config.study.optuna_study or config.study.name


def open_storage(config: StudyConfig):
    """The study's Optuna RDB storage (tables created if new); ConfigError if unreachable."""
    url = config.study.optuna_storage
    if not url:
        return None
    try:
        return StudyStorage(url)
    except ConfigError:
        raise
    except Exception as error:  # noqa: BLE001 - any driver error: one line naming the URL
        text = str(error).strip()
        first = text.splitlines()[0] if text else type(error).__name__
        raise ConfigError(f"[study] optuna_storage {redact_url(url)} is unreachable: "
                          f"{first}") from None


def check_optuna_storage(config: StudyConfig, storage=None) -> int:
    """Validate the Optuna storage before anything starts; returns the trials already there.

    A study continued from the storage must optimize the same metric in the same
    direction: warm-starting a minimization from a maximization would silently
    drive the search the wrong way.
    """
    from optuna.study import StudyDirection

    storage = storage or open_storage(config)
    if storage is None:
        return 0
    name = optuna_study_name(config)
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return 0
    metrics, modes = objectives(config)
    wanted = [StudyDirection.MAXIMIZE if mode == "max" else StudyDirection.MINIMIZE
              for mode in modes]
    directions = storage.get_study_directions(study_id)
    where = f"[study] optuna_study {name!r} in {redact_url(config.study.optuna_storage)}"
    if list(directions) != wanted:
        have = "/".join(d.name.lower() for d in directions)
        want = "/".join(d.name.lower() for d in wanted)
        raise ConfigError(f"{where} is a {have} study; this study wants to {want} "
                          f"{', '.join(metrics)} (use another optuna_study)")
    metric = storage.get_study_user_attrs(study_id).get(METRIC_ATTR)
    if metric is not None and metric != config.study.metric:
        raise ConfigError(f"{where} optimized {metric}, not {config.study.metric}; "
                          f"warm-start only from a study of the same metric")
    return len(storage.get_all_trials(study_id, deepcopy=False))


# ---------------------------------------------------------------- the searcher


def objectives(config: StudyConfig) -> tuple[list[str], list[str]]:
    """(metrics, modes) Optuna optimizes: the study metric, then any costs (minimised)."""
    metrics = list(config.study.objectives) or [config.study.metric]
    return metrics, [config.study.mode] + ["min"] * (len(metrics) - 1)


class ConstrainedOptunaSearch(OptunaSearch):
    """OptunaSearch that rejects networks over a [constraints] limit before any trial starts.

    A rejected network is told to Optuna as a pruned trial carrying its constraint
    violations (TPE's constraints_func reads them) and the next one is sampled, so
    no Ray trial is ever created for it. A trial over max_latency_ms (measured in
    the trial) is told the same way when it ends. Costs known before training are
    added to every result, so params/flops objectives are there for DDP trials too.
    """

    def suggest(self, trial_id: str):
        from optuna.trial import TrialState

        for _ in range(MAX_REJECTIONS):
            try:
                config = super().suggest(trial_id)
            except InfeasibleArchitecture as rejected:
                ot_trial = self._ot_trials.pop(trial_id)
                set_constraints(ot_trial, rejected.violations)
                self._ot_study.tell(ot_trial, state=TrialState.PRUNED)
                continue
            costs = self.__dict__.setdefault("_costs", {})
            spec = TrialSpec.from_tune(config)
            costs[trial_id] = (dict(spec.cost), dict(spec.constraints))
            return config
        raise RuntimeError(f"the searcher rejected {MAX_REJECTIONS} networks in a row as "
                           f"over the [constraints] limits; raise the limits or give "
                           f"[space] smaller networks")

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False):
        cost, limits = self.__dict__.get("_costs", {}).pop(trial_id, ({}, {}))
        if result is not None:
            result = {**cost, **result}
            measured = {k: result[k] for k in ("params", "flops", "latency_ms") if k in result}
            if trial_id in self._ot_trials and limits:
                set_constraints(self._ot_trials[trial_id], constraint_violations(measured, limits))
        super().on_trial_complete(trial_id, result, error)


def build_searcher(config: StudyConfig):
    """Ray's OptunaSearch over the study's space, with the study's sampler."""
    import warnings

    import optuna

    # The first proposal costs a second or two once per process (torch's meta-device
    # kernels load for the network's cost, `search.space.sampler`); Ray warns about any
    # define-by-run call over 1 s, which would alarm every user for nothing.
    warnings.filterwarnings("ignore", message="Define-by-run function passed in the `space`")

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    kwargs = {}
    storage = open_storage(config)
    if storage is not None:
        # Ray wants a BaseStorage instance, not a URL string.
        previous = check_optuna_storage(config, storage)
        name = optuna_study_name(config)
        kwargs["storage"] = storage
        kwargs["study_name"] = name
        source = (f"warm-starting from {previous} trials of" if previous else "new")
        print(f"optuna: {source} study {name!r} in {redact_url(config.study.optuna_storage)}",
              file=sys.stderr)
    metrics, modes = objectives(config)
    many = len(metrics) > 1
    searcher = ConstrainedOptunaSearch(
        SearchSpace(config), metric=metrics if many else metrics[0],
        mode=modes if many else modes[0], sampler=build_sampler(config), **kwargs,
    )
    if storage is not None:
        storage.set_study_user_attr(storage.get_study_id_from_name(kwargs["study_name"]),
                                    METRIC_ATTR, config.study.metric)
    return searcher
