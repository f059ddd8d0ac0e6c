"""`resnet-search status`, `best` and `studies`: a study's trials, its best trial (or Pareto
front), and every study of a tracking store, read back from MLflow."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from search.tracking.tags import champion_uri

# Reading a store imports what it reads with (MLflow, for a store that is not a local SQLite
# file: seconds): the commands below import those modules when they run, so that the parser
# and the other commands never pay it.


# Trials `status` lists unless told otherwise: a study of thousands stays one screen.
STATUS_TOP = 10


def cmd_status(args: argparse.Namespace) -> int:
    from search.results.retrieve import study_status  # see above

    status = study_status(args.name, args.tracking_uri)
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    counts = ", ".join(f"{n} {s}" for s, n in sorted(status["counts"].items())) or "no trials"
    print(f"study {status['study']} ({status['status']}): {len(status['trials'])} of "
          f"{status['num_samples']} trials: {counts}")
    print(f"storage {status['storage_path']}, tracking {status['tracking_uri']}")
    metric = f"best {status['metric']}"
    rows = shown_trials(status["trials"], None if getattr(args, "all", False) else args.top)
    print(f"\n{'rank':>4} {'#':>3} {'trial':<12} {'status':<11} {'model':<22} {'optimizer':<9} "
          f"{'lr':>9} {'epochs':>6} {metric:>16}")
    for place, t in rows:
        print(f"{place if t['ranked'] else '-':>4} {t['optuna_trial_number']:>3} "
              f"{t['trial_id'] or '?':<12} {t['status']:<11} {t['model']:<22} "
              f"{t['optimizer'] or '?':<9} {_num(t['lr']):>9} {t['epochs']:>6} "
              f"{_num(t['value'], 4):>16}")
    if len(rows) < len(status["trials"]):
        print(f"... {len(status['trials']) - len(rows)} more trials: --top N shows more, "
              f"--all every one, --json all of them as data")
    _print_best_and_champion(status, metric)
    return 0


def shown_trials(trials: list[dict[str, Any]], top: int | None) -> list[tuple[int, dict[str, Any]]]:
    """(rank, row) of the trials `status` lists: all of them, or the best `top` (ranking's
    order) and every running one after them, so a big study's table stays readable."""
    numbered = list(enumerate(trials, 1))
    if top is None:
        return numbered
    best = [(place, t) for place, t in numbered if t["ranked"]][:max(top, 0)]
    listed = {place for place, _ in best}
    return best + [(place, t) for place, t in numbered
                   if t["status"] == "running" and place not in listed]


def _print_best_and_champion(status: dict[str, Any], metric: str) -> None:
    best = status["best"]
    if best:
        print(f"\nbest: trial {best['trial_id']} ({best['model']}), {metric} "
              f"{_num(best['value'], 4)} at epoch {best['best_epoch']}")
    champion = status["champion"]
    if champion is not None and status["test_accuracy"] is not None:
        alias = f" = {champion_uri(champion['model'])}" if champion["is_alias"] else ""
        print(f"champion: {champion['uri']}{alias} (trial {status['champion_trial_id']}), "
              f"test accuracy {status['test_accuracy']:.4f}")


def _num(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}g}" if digits == 3 else f"{value:.{digits}f}"


def cmd_best(args: argparse.Namespace) -> int:
    from search.results.retrieve import export_best_checkpoint, study_status  # see above

    if getattr(args, "pareto", False):
        return _print_pareto(args)
    status = study_status(args.name, args.tracking_uri)
    best = status["best"]
    if best is None:
        print(f"resnet-search: study {args.name} has no scored trial yet", file=sys.stderr)
        return 1
    exported = None
    if args.export is not None:
        exported = str(export_best_checkpoint(args.name, args.export, args.tracking_uri, status))
    report = {
        "study": args.name,
        "best": best,
        "test_accuracy": status["test_accuracy"],
        "model_uri": status["champion"]["uri"] if status["champion"] else None,
        "exported": exported,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"best trial of {args.name}: {best['trial_id']} (Optuna #{best['optuna_trial_number']}, "
          f"{best['status']})")
    print(f"  model {best['model']}, optimizer {best['optimizer']}, lr {_num(best['lr'])}")
    print(f"  best {status['metric']} {_num(best['value'], 4)} at epoch {best['best_epoch']} "
          f"(val loss {_num(best['val_loss_at_best'], 4)}), epochs {best['epochs']}")
    print(f"  MLflow run {best['mlflow_run_id']}")
    print(f"  checkpoint {best['checkpoint']}")
    if report["model_uri"]:
        print(f"  champion {report['model_uri']}, test accuracy {status['test_accuracy']:.4f}")
    if exported:
        print(f"exported checkpoint to {exported}")
    return 0


def _print_pareto(args: argparse.Namespace) -> int:
    """`best NAME --pareto`: the trials no other trial beats on every objective."""
    from search.results.pareto import front_rows, markdown_table
    from search.tracking import local_store, store

    front = local_store.first_of(  # a local store without MLflow's import, any other through it
        lambda: front_rows(*local_store.open_study(args.name, args.tracking_uri)[1:]),
        lambda: front_rows(*store.open_study(args.name, args.tracking_uri)[1:]))
    if args.json:
        print(json.dumps({"study": args.name, **front}, indent=2))
        return 0
    if not front["front"]:
        print(f"resnet-search: study {args.name} has no scored feasible trial yet", file=sys.stderr)
        return 1
    goals = ", ".join(f"{mode} {name}" for name, mode in zip(front["objectives"], front["modes"],
                                                             strict=True))
    print(f"Pareto front of {args.name}: {len(front['front'])} of {front['candidates']} "
          f"feasible trials ({goals})")
    print(markdown_table(front), end="")
    return 0


def cmd_studies(args: argparse.Namespace) -> int:
    """Every study in the tracking store, newest first."""
    from search.results.studies import format_studies, list_studies  # see above

    listing = list_studies(args.tracking_uri)
    print(json.dumps(listing, indent=2) if args.json else format_studies(listing))
    return 0
