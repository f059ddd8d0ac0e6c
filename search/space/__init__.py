"""The search space as Optuna samples it: the define-by-run space and the searcher.
"""

from search import lazy_exports

# Names load on first use (PEP 562): importing one module of this folder must not import
# the others (MLflow, Ray and torch cost seconds that `check` and `status` never pay).
__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "CONDITIONS": "sampler",
    "InfeasibleArchitecture": "sampler",
    "SearchSpace": "sampler",
    "describe_space": "sampler",
    "explain_space": "sampler",
    "sampled_under": "sampler",
    "sampled_when": "sampler",
    "build_sampler": "searcher",
    "build_searcher": "searcher",
    "check_optuna_storage": "searcher",
    "objectives": "searcher",
})
