"""The search commands: run, resume, status, best, ui (argument parsing lives in cli.py)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from search.config import load_study


def _print_outcome(outcome) -> None:
    best = outcome.best
    model = best["config"]["model"]
    train = best["config"]["train"]
    name = (f"wrn-{model['depth']}-{model.get('width', 1)}" if model["family"] == "wrn"
            else f"{model['family']}-{model['depth']}")
    print(f"\nstudy {outcome.name}: {outcome.trials} trials")
    print(f"best trial {best['trial_id']}: {name} ({model.get('block', 'basic')}), "
          f"{train['optimizer']} lr={train['lr']:.4g}, dropout={model.get('dropout', 0):.3g}")
    metric = next(k for k in best if k.startswith(("val_", "best_val")))
    print(f"  {metric} {best[metric]:.4f}, test accuracy {outcome.test_accuracy:.4f}")
    print(f"registered model: models:/{outcome.registered_model}@champion "
          f"(version {outcome.model_version})")
    print(f"dashboard: {_dashboard_command(outcome.tracking_uri)}")


def _dashboard_command(uri: str) -> str:
    if uri.startswith(("http://", "https://")):
        return f"open {uri}"
    return f"resnet-search ui --tracking-uri {uri}   (then open http://127.0.0.1:5000)"


def cmd_run(args: argparse.Namespace) -> int:
    from search.study import run_study

    config = load_study(args.study, name=args.name)
    _quiet_ray(args.quiet)
    outcome = run_study(config, address=args.address, tracking_uri=args.tracking_uri)
    _print_outcome(outcome)
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from search.study import StudyAlreadyCompleted, resume_study

    _quiet_ray(args.quiet)
    try:
        outcome = resume_study(args.name, address=args.address, tracking_uri=args.tracking_uri)
    except StudyAlreadyCompleted as done:
        print(done)
        return 0
    _print_outcome(outcome)
    return 0


def _quiet_ray(quiet: bool) -> None:
    import logging

    # torch.export explains its shape specialisation when the champion is logged: noise here.
    logging.getLogger("torch._export").setLevel(logging.ERROR)
    logging.getLogger("torch.export").setLevel(logging.ERROR)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if quiet:
        os.environ["RESNET_SEARCH_QUIET"] = "1"


def cmd_status(args: argparse.Namespace) -> int:
    from search.retrieve import study_status

    status = study_status(args.name, args.tracking_uri)
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    counts = ", ".join(f"{n} {s}" for s, n in sorted(status["counts"].items())) or "no trials"
    print(f"study {status['study']} ({status['status']}): {len(status['trials'])} of "
          f"{status['num_samples']} trials: {counts}")
    print(f"storage {status['storage_path']}, tracking {status['tracking_uri']}")
    print(f"\n{'#':>3} {'trial':<12} {'status':<10} {'model':<22} {'optimizer':<9} "
          f"{'lr':>9} {'epochs':>6} {'best val acc':>12}")
    for t in status["trials"]:
        acc = t["best_val_accuracy"]
        print(f"{t['optuna_trial_number']:>3} {t['trial_id'] or '?':<12} {t['status']:<10} "
              f"{t['model']:<22} {t['optimizer'] or '?':<9} {_num(t['lr']):>9} "
              f"{t['epochs']:>6} {_num(acc, 4):>12}")
    best = status["best"]
    if best:
        print(f"\nbest so far: trial {best['trial_id']} ({best['model']}), best val accuracy "
              f"{_num(best['best_val_accuracy'], 4)}")
    if status["test_accuracy"] is not None:
        print(f"champion: models:/{status['registered_model']}@champion, test accuracy "
              f"{status['test_accuracy']:.4f}")
    return 0


def _num(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}g}" if digits == 3 else f"{value:.{digits}f}"


def cmd_best(args: argparse.Namespace) -> int:
    from search.retrieve import export_best_checkpoint, study_status

    status = study_status(args.name, args.tracking_uri)
    best = status["best"]
    if best is None:
        print(f"resnet-search: study {args.name} has no scored trial yet", file=sys.stderr)
        return 1
    exported = None
    if args.export is not None:
        exported = str(export_best_checkpoint(args.name, args.export, args.tracking_uri))
    report = {
        "study": args.name,
        "best": best,
        "test_accuracy": status["test_accuracy"],
        "model_uri": (f"models:/{status['registered_model']}@champion"
                      if status["test_accuracy"] is not None else None),
        "exported": exported,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"best trial of {args.name}: {best['trial_id']} (Optuna #{best['optuna_trial_number']}, "
          f"{best['status']})")
    print(f"  model {best['model']}, optimizer {best['optimizer']}, lr {_num(best['lr'])}")
    print(f"  best val accuracy {_num(best['best_val_accuracy'], 4)}, epochs {best['epochs']}")
    print(f"  MLflow run {best['mlflow_run_id']}")
    print(f"  checkpoint {best['checkpoint']}")
    if report["model_uri"]:
        print(f"  champion {report['model_uri']}, test accuracy {status['test_accuracy']:.4f}")
    if exported:
        print(f"exported checkpoint to {exported}")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    """Open the MLflow dashboard on the study store (localhost unless --host says otherwise)."""
    import subprocess

    from search.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(args.tracking_uri)
    if uri.startswith(("http://", "https://")):
        print(f"the tracking server {uri} serves its own dashboard: open it in a browser")
        return 0
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
               "--host", args.host, "--port", str(args.port)]
    print(f"MLflow dashboard on http://{args.host}:{args.port} (Ctrl-C stops it)", file=sys.stderr)
    return subprocess.call(command)
