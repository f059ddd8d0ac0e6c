"""The `resnet-search` command line: argument parsing and one function per command.
"""

from search import lazy_exports

# Names load on first use (PEP 562): importing one module of this folder must not import
# the others (MLflow, Ray and torch cost seconds that `check` and `status` never pay).
__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "DASHBOARD": "commands",
    "build_parser": "main",
    "entry_point": "main",
    "main": "main",
})
