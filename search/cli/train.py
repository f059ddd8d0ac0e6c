"""`resnet-search models`, `train` and `evaluate`: the registry, and one model trained or
scored outside any study."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from resnet_core import TrainConfig, configs_from_options
from search.cli.errors import UsageError, user_input


def cmd_models(args: argparse.Namespace) -> int:
    # Counting FLOPs builds each network: torch's import (2-3 s) is paid here, not at start.
    from resnet_core import architecture_cost, list_models, parse_model_name, registered_families

    rows = []
    for name in list_models():
        config = parse_model_name(name)
        parameters, flops = architecture_cost(config, (args.input_size, args.input_size),
                                              num_classes=args.num_classes)
        rows.append({
            "name": name, "family": config.family, "depth": config.depth, "width": config.width,
            "block": config.block, "shortcut": config.shortcut,
            "parameters": parameters, "flops": flops,
        })
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    name_width = max(20, *(len(r["name"]) for r in rows))
    family_width = max(14, *(len(r["family"]) for r in rows))
    print(f"{'name':<{name_width}} {'family':<{family_width}} {'depth':>5} {'width':>5} "
          f"{'block':<10} {'params':>9} {'MFLOPs':>9}")
    for r in rows:
        print(f"{r['name']:<{name_width}} {r['family']:<{family_width}} {r['depth']:>5} "
              f"{r['width']:>5} {r['block']:<10} {r['parameters'] / 1e6:>8.2f}M "
              f"{r['flops'] / 1e6:>9.1f}")
    formats = ", ".join(entry.name_format for entry in registered_families())
    print(f"\nAny valid depth parses too ({formats}); FLOPs are multiply-adds per "
          f"{args.input_size}x{args.input_size} image, parameters at {args.num_classes} classes.")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from search.trial.single_run import train_to_directory  # torch: only train pays it

    schedule = getattr(args, "schedule", TrainConfig.__dataclass_fields__["schedule"].default)
    if hasattr(args, "milestones") and schedule != "milestones":
        raise UsageError(f"--milestones needs --schedule milestones (got --schedule {schedule})")
    with user_input():
        model_config, train_config, data_config = _train_configs(args)
    out = args.out or Path("runs") / f"{model_config.name}-{data_config.dataset}"
    try:
        summary = train_to_directory(model_config, train_config, data_config, out,
                                     device=args.device, resume=args.resume,
                                     progress=not args.quiet)
    except KeyboardInterrupt:
        if not (out / "checkpoint.pt").is_file():
            raise  # nothing to continue from: main's plain "interrupted"
        print(f"{'' if args.quiet else chr(10)}resnet-search: interrupted; "  # off the bar's line
              f"{out / 'checkpoint.pt'} holds the last finished epoch: the same command with "
              f"--resume continues", file=sys.stderr)
        return 130
    print(f"{summary['model']} on {data_config.dataset}: "
          f"val accuracy {summary['val_accuracy']:.4f}, "
          f"test accuracy {summary['test_accuracy']:.4f} "
          f"({summary['parameters'] / 1e6:.2f}M parameters)")
    print(f"wrote {out / 'checkpoint.pt'} and {out / 'metrics.json'}")
    return 0


def _train_configs(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """The model, train and data configs of `train`'s flags: a field flag not given keeps the
    dataclass default (the parser leaves it out of `args`)."""
    return configs_from_options(args.model, vars(args))


def cmd_evaluate(args: argparse.Namespace) -> int:
    # torch's import costs seconds, MLflow's too: evaluate pays torch's, and MLflow's only
    # for a model URI.
    from search.trial.single_run import evaluate_checkpoint

    if args.checkpoint is not None:
        result = evaluate_checkpoint(args.checkpoint, dataset=args.dataset, root=args.root,
                                     split=args.split, device=args.device)
    else:
        from search.results.retrieve import evaluate_model_uri

        result = evaluate_model_uri(args.model_uri, tracking_uri=args.tracking_uri,
                                    dataset=args.dataset, root=args.root, split=args.split,
                                    device=args.device)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['source']}: {result['dataset']} {result['split']} "
              f"accuracy {result['accuracy']:.4f}, loss {result['loss']:.4f} "
              f"({result['images']} images)")
    return 0
