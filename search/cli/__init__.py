"""The `resnet-search` command line: the parser and `main` (main.py), and one module per
command or close group, named by what the user types (run.py: run and resume; status.py:
status, best and studies; train.py: models, train and evaluate; check, predict, report,
serve, ui), with the servers' process handling (processes.py), the set-up of a study's
logging (logging_setup.py) and the user's errors (errors.py).
"""

from search import lazy_exports

# Names load on first use (PEP 562): importing one module of this folder must not import
# the others (MLflow, Ray and torch cost seconds that `check` and `status` never pay).
__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "DASHBOARD": "ui",
    "build_parser": "main",
    "entry_point": "main",
    "main": "main",
})
