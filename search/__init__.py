"""search: the platform. Ray Tune runs trials, Optuna samples, MLflow tracks."""
