"""`resnet-search check`: a study file resolved and explained, without starting anything.

No Ray, no MLflow, no training: users run it in their own CI before a cluster job.
What it prints is what `run` would use: the fixed recipe, the space with each
parameter's domain and the condition it is sampled under, the scheduler,
resources, tracking URI (password redacted), storage path, and the dataset (a
folder of images is listed, not decoded: its classes, images per split, cache state).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

from resnet_core import ModelConfig, describe_dataset, searchable_fields
from search.space.sampler import explain_space
from search.studyfile.config import StudyConfig, load_study, redact_url
from search.studyfile.paths import tracking_uri_and_source


def cmd_check(args: argparse.Namespace) -> int:
    """Validate a study file and print the resolved study; starts nothing (no Ray, no MLflow)."""
    resolved = resolve_study(load_study(args.study))
    print(json.dumps(resolved, indent=2) if args.json else format_study(resolved))
    return 0


def resolve_study(config: StudyConfig) -> dict[str, Any]:
    """The study as plain data (the `--json` output)."""
    # Paths as the run resolves them; search.study.run imports torch (seconds), which the
    # other commands must not pay at start.
    from search.study.run import absolute_paths
    from search.studyfile.init_weights import check_init

    resolved = absolute_paths(config)
    dataset = _dataset(config, resolved)
    check_init(resolved)  # weights that do not fit a network of the space: refused here
    fixed_model = {spec.name: spec.default for spec in searchable_fields(ModelConfig)
                   if spec.name not in config.space}
    study = asdict(config.study)
    if config.study.optuna_storage:
        study["optuna_storage"] = redact_url(config.study.optuna_storage)
    # The URI `run` would use without --tracking-uri.
    uri, source = tracking_uri_and_source(None, config.tracking.uri)
    return {
        "file": config.path,
        "study": study,
        "recipe": {
            "model": fixed_model,
            "data": _plain(asdict(resolved.data)),
            "train": _plain({k: v for k, v in asdict(config.train).items()
                             if k not in config.space}),
        },
        "space": explain_space(config),
        "constraints": asdict(config.constraints),
        "scheduler": asdict(config.scheduler),
        "resources": asdict(config.resources),
        "tracking": {**asdict(config.tracking), "uri": redact_url(uri), "uri_from": source,
                     "registered_model": config.registered_model},
        "storage": {"path": resolved.storage.path},
        "dataset": dataset,
    }


def _dataset(config: StudyConfig, resolved: StudyConfig) -> str:
    """What the data is (a user's folder: its classes, images per split, cache state): read
    from the files without decoding them; a folder that cannot be used is refused here."""
    from search.study.run import data_errors_of  # torch: see resolve_study

    with data_errors_of(config):
        return describe_dataset(resolved.data)


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


def format_study(resolved: dict[str, Any]) -> str:
    """The human-readable form: one block per section."""
    study = resolved["study"]
    lines = [f"study {study['name']} ({resolved['file']}): {study['num_samples']} trials, "
             f"{study['mode']} {study['metric']}, {study['sampler']} sampler, seed {study['seed']}"]
    for section in ("model", "data", "train"):
        lines.append(f"\nfixed [{section}]" if section != "model" else
                     "\nfixed model options (not in [space])")
        lines += [f"  {key:<20} {_value(value)}"
                  for key, value in resolved["recipe"][section].items()]
    lines.append("\n[space]")
    for row in resolved["space"]:
        lines.append(f"  {row['name']:<20} {row['kind']:<7} {row['domain']:<28} {row['sampled']}")
        for label, depths in row.get("depths", {}).items():
            lines.append(f"  {'':<20} {label}: {', '.join(map(str, depths))}")
    for section in ("constraints", "scheduler", "resources", "tracking", "storage"):
        lines.append(f"\n[{section}]")
        lines += [f"  {key:<20} {_value(value)}" for key, value in resolved[section].items()]
    lines.append("\ndataset")
    lines += [f"  {line}" for line in resolved["dataset"].splitlines()]
    return "\n".join(lines)


def _value(value: Any) -> str:
    return "unset" if value is None else str(value)

