"""Running a study: the Ray it runs on, trial resources, the Tuner, interrupts,
storage, and the champion at its end.
"""

from search import lazy_exports

# Names load on first use (PEP 562): importing one module of this folder must not import
# the others (MLflow, Ray and torch cost seconds that `check` and `status` never pay).
__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "autoscaler_from_config": "autoscaling",
    "AutoGpuResources": "gpu_packing",
    "MAX_TRIALS_PER_GPU": "gpu_packing",
    "estimate_training_memory": "gpu_packing",
    "gpu_fraction": "gpu_packing",
    "StudyFailed": "interrupt",
    "StudyInterrupted": "interrupt",
    "hide_tunes_resume_hint": "interrupt",
    "start_ray": "ray_session",
    "use_the_token_found_here": "ray_session",
    "gpus_per_trial": "resources",
    "wrap_trainable": "resources",
    "StudyAlreadyCompleted": "run",
    "absolute_paths": "run",
    "asha_scheduler": "run",
    "build_tuner": "run",
    "data_errors_of": "run",
    "resume_study": "run",
    "run_study": "run",
    "trial_callback": "run",
    "trial_name": "run",
    "WARM_UP_STEPS": "warmup",
    "warm_up": "warmup",
})
