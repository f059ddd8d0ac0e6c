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

from search.config import ConfigError, StudyConfig
from search.space import SearchSpace
from search.tracking import redact_url

METRIC_ATTR = "resnet_search.metric"
CONNECT_TIMEOUT_S = 10
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def build_sampler(config: StudyConfig):
    import optuna

    seed = config.study.seed
    if config.study.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # multivariate + group model the conditional space jointly; constant_liar keeps
    # concurrent trials from being proposed the same point.
    return optuna.samplers.TPESampler(
        seed=seed, multivariate=True, group=True, constant_liar=True,
        n_startup_trials=max(3, min(10, config.study.num_samples // 3)),
    )


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
    wanted = StudyDirection.MAXIMIZE if config.study.mode == "max" else StudyDirection.MINIMIZE
    directions = storage.get_study_directions(study_id)
    where = f"[study] optuna_study {name!r} in {redact_url(config.study.optuna_storage)}"
    if list(directions) != [wanted]:
        have = "/".join(d.name.lower() for d in directions)
        raise ConfigError(f"{where} is a {have} study; this study wants to {wanted.name.lower()} "
                          f"{config.study.metric} (use another optuna_study)")
    metric = storage.get_study_user_attrs(study_id).get(METRIC_ATTR)
    if metric is not None and metric != config.study.metric:
        raise ConfigError(f"{where} optimized {metric}, not {config.study.metric}; "
                          f"warm-start only from a study of the same metric")
    return len(storage.get_all_trials(study_id, deepcopy=False))


# ---------------------------------------------------------------- the searcher


def build_searcher(config: StudyConfig):
    import optuna
    from ray.tune.search.optuna import OptunaSearch

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
    searcher = OptunaSearch(
        SearchSpace(config), metric=config.study.metric, mode=config.study.mode,
        sampler=build_sampler(config), **kwargs,
    )
    if storage is not None:
        storage.set_study_user_attr(storage.get_study_id_from_name(kwargs["study_name"]),
                                    METRIC_ATTR, config.study.metric)
    return searcher
