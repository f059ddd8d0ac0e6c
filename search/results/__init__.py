"""Reading a study back: status and the best trial, the report, the Pareto front,
every study in a store, and predictions of the champion.
"""

from search import lazy_exports

# Names load on first use (PEP 562): importing one module of this folder must not import
# the others (MLflow, Ray and torch cost seconds that `check` and `status` never pay).
__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "curves_figure": "charts",
    "group_rows": "charts",
    "optuna_figures": "charts",
    "optuna_study": "charts",
    "pareto_front": "charts",
    "sampled": "charts",
    "dominates": "pareto",
    "front_rows": "pareto",
    "markdown_table": "pareto",
    "non_dominated": "pareto",
    "record_pareto_front": "pareto",
    "predict_files": "predict",
    "ARTIFACT_DIR": "report",
    "CHART_DIR": "report",
    "REPORT_FILE": "report",
    "SECTIONS": "report",
    "build_report": "report",
    "log_report": "report",
    "evaluate_model_uri": "retrieve",
    "export_best_checkpoint": "retrieve",
    "load_best": "retrieve",
    "load_model_uri": "retrieve",
    "study_status": "retrieve",
    "format_studies": "studies",
    "list_studies": "studies",
})
