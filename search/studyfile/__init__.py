"""The study file: TOML sections -> validated configs, the [space] rules, home paths.

No Ray, no MLflow: `check` and every command's validation run on this folder alone.
"""

from search import lazy_exports

# Names load on first use (PEP 562): importing one module of this folder must not import
# the others (MLflow, Ray and torch cost seconds that `check` and `status` never pay).
__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "COSTS": "config",
    "ConfigError": "config",
    "ConstraintsSection": "config",
    "DEFAULT_GRACE_PERIOD": "config",
    "SECTIONS": "config",
    "StudyConfig": "config",
    "TRACKING_SCHEMES": "config",
    "config_params": "config",
    "load_study": "config",
    "parse_study": "config",
    "redact_url": "config",
    "study_params": "config",
    "default_artifact_root": "paths",
    "default_storage_path": "paths",
    "home": "paths",
    "home_hint": "paths",
    "resolve_tracking_uri": "paths",
    "tracking_uri_and_source": "paths",
    "SPACE_KEYS": "space_rules",
    "SpaceParam": "space_rules",
    "network_cost": "space_rules",
    "valid_depths": "space_rules",
})
