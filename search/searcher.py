"""The Optuna searcher: seeded TPE (or random) over the define-by-run space."""

from __future__ import annotations

from search.config import StudyConfig
from search.space import SearchSpace


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


def build_searcher(config: StudyConfig):
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    kwargs = {}
    if config.study.optuna_storage:
        kwargs["storage"] = config.study.optuna_storage
        kwargs["study_name"] = config.study.optuna_study or config.study.name
    return OptunaSearch(
        SearchSpace(config), metric=config.study.metric, mode=config.study.mode,
        sampler=build_sampler(config), **kwargs,
    )
