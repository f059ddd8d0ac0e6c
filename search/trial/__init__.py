"""What one trial runs: its typed spec, the Tune trainable, its DDP workers, and single
training runs.
"""

from search import lazy_exports

# Names load on first use (PEP 562): importing one module of this folder must not import
# the others (MLflow, Ray and torch cost seconds that `check` and `status` never pay).
__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "DDP_DRIVER_CPU": "ddp_resources",
    "torch_threads": "ddp_resources",
    "announce_workers": "ddp_worker",
    "run_worker": "ddp_worker",
    "ForwardToTrial": "distributed",
    "build_trainer": "distributed",
    "remove_staging_folders": "distributed",
    "start_launcher": "distributed",
    "train_distributed_trial": "distributed",
    "evaluate_checkpoint": "single_run",
    "TrialResources": "spec",
    "TrialSpec": "spec",
    "evaluate_module": "single_run",
    "train_to_directory": "single_run",
    "build_run": "trainable",
    "latency_result": "trainable",
    "train_trial": "trainable",
})
