"""The `resnet-search` command line.

Every command validates its input before starting anything: bad input prints
one line (`resnet-search: error: ...`) and exits with code 2. Heavy imports
(Ray, MLflow) happen inside the commands that need them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any, NoReturn

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad input from the user: reported as one line with exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not the whole usage text
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 1")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
    return value


def _port(text: str) -> int:
    value = _positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} must be a port in 1-65535")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be in [0, 1)")
    return value


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    from resnet_core.data import DATASETS
    from resnet_core.optim import OPTIMIZERS, SCHEDULES

    parser = _Parser(prog="resnet-search", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    models = commands.add_parser("models", help="list the model registry")
    models.add_argument("--json", action="store_true", help="machine-readable output")
    models.add_argument("--input-size", type=_positive_int, default=32,
                        help="image side for FLOP counts (default 32)")

    train = commands.add_parser("train", help="train one model")
    train.add_argument("--model", default="wrn-16-2", help="registry name, e.g. resnet-20, wrn-16-2")
    train.add_argument("--dataset", default="digits", choices=DATASETS)
    train.add_argument("--root", default="data", help="data root (default ./data)")
    train.add_argument("--download", action="store_true", help="download a missing dataset")
    train.add_argument("--val-size", type=_positive_int, default=None)
    train.add_argument("--subset", type=_positive_int, default=None,
                       help="train on this many images only")
    train.add_argument("--no-augment", dest="augment", action="store_false")
    train.add_argument("--epochs", type=_positive_int, default=15)
    train.add_argument("--batch-size", type=_positive_int, default=128)
    train.add_argument("--optimizer", default="sgd", choices=OPTIMIZERS)
    train.add_argument("--lr", type=_positive_float, default=0.1)
    train.add_argument("--momentum", type=_fraction, default=0.9)
    train.add_argument("--weight-decay", type=float, default=5e-4)
    train.add_argument("--no-decay-bn-bias", dest="exempt_bn_and_bias", action="store_true",
                       help="exempt BN parameters and biases from weight decay")
    train.add_argument("--schedule", default="cosine", choices=SCHEDULES)
    train.add_argument("--milestones", type=float, nargs="+", default=None,
                       help="fractions of training for --schedule milestones, e.g. 0.5 0.75")
    train.add_argument("--gamma", type=_positive_float, default=0.2)
    train.add_argument("--warmup-epochs", type=float, default=0.0)
    train.add_argument("--label-smoothing", type=_fraction, default=0.0)
    train.add_argument("--grad-clip", type=_positive_float, default=None)
    train.add_argument("--dropout", type=_fraction, default=None)
    train.add_argument("--block", choices=("basic", "bottleneck"), default=None)
    train.add_argument("--shortcut", choices=("A", "B"), default=None)
    train.add_argument("--bn-position", choices=("before_add", "after_add"), default=None)
    amp = train.add_mutually_exclusive_group()
    amp.add_argument("--amp", dest="amp", action="store_true", default=None,
                     help="bf16 autocast (default: on where bf16 is fast)")
    amp.add_argument("--no-amp", dest="amp", action="store_false")
    train.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    train.add_argument("--compile", action="store_true", help="torch.compile the model")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--deterministic", action="store_true")
    train.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if present)")
    train.add_argument("--out", type=Path, default=None,
                       help="output directory (default runs/MODEL-DATASET)")
    train.add_argument("--resume", action="store_true",
                       help="continue from OUT/checkpoint.pt if it exists")
    train.add_argument("--quiet", action="store_true", help="no progress bar")

    evaluate = commands.add_parser("evaluate", help="score a checkpoint or a registered model")
    source = evaluate.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="checkpoint.pt or its directory")
    source.add_argument("--model-uri", help="MLflow model URI, e.g. models:/NAME@champion")
    evaluate.add_argument("--tracking-uri", default=None)
    evaluate.add_argument("--dataset", default=None, choices=DATASETS)
    evaluate.add_argument("--root", default=None)
    evaluate.add_argument("--split", default="test", choices=("train", "val", "test"))
    evaluate.add_argument("--device", default=None)
    evaluate.add_argument("--json", action="store_true")

    _add_search_commands(commands)
    return parser


def _add_search_commands(commands: Any) -> None:
    run = commands.add_parser("run", help="run a study file")
    run.add_argument("study", type=Path, help="study TOML file")
    _add_cluster_options(run)
    run.add_argument("--name", default=None, help="study name (default: [study] name)")
    run.add_argument("--quiet", action="store_true", help="no live trial table")

    resume = commands.add_parser("resume", help="continue an interrupted study")
    resume.add_argument("name")
    _add_cluster_options(resume)
    resume.add_argument("--quiet", action="store_true")

    status = commands.add_parser("status", help="trials of a study and the best so far")
    status.add_argument("name")
    status.add_argument("--tracking-uri", default=None)
    status.add_argument("--json", action="store_true")

    best = commands.add_parser("best", help="the best trial of a study")
    best.add_argument("name")
    best.add_argument("--tracking-uri", default=None)
    best.add_argument("--json", action="store_true")
    best.add_argument("--export", type=Path, default=None, help="copy its checkpoint here")

    ui = commands.add_parser("ui", help="open the MLflow dashboard of the local store")
    ui.add_argument("--tracking-uri", default=None)
    ui.add_argument("--host", default="127.0.0.1", help="bind address (default localhost only)")
    ui.add_argument("--port", type=_port, default=5000)


def _add_cluster_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", default=None,
                        help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else [tracking] uri "
                             "of the study file for run, else the local store)")


# ---------------------------------------------------------------- commands


def cmd_models(args: argparse.Namespace) -> int:
    from resnet_core.models import (
        build_model,
        count_flops,
        count_parameters,
        list_models,
        parse_model_name,
    )

    rows = []
    for name in list_models():
        config = parse_model_name(name)
        model = build_model(config)
        rows.append({
            "name": name, "family": config.family, "depth": config.depth, "width": config.width,
            "block": config.block, "shortcut": config.shortcut,
            "parameters": count_parameters(model),
            "flops": count_flops(model, (args.input_size, args.input_size)),
        })
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':<20} {'family':<14} {'depth':>5} {'width':>5} {'block':<10} "
          f"{'params':>9} {'MFLOPs':>9}")
    for r in rows:
        print(f"{r['name']:<20} {r['family']:<14} {r['depth']:>5} {r['width']:>5} "
              f"{r['block']:<10} {r['parameters'] / 1e6:>8.2f}M {r['flops'] / 1e6:>9.1f}")
    print(f"\nAny valid depth parses too (plain-D, resnet-D, preact-resnet-D, wrn-D-K); "
          f"FLOPs are multiply-adds per {args.input_size}x{args.input_size} image.")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from search.single_run import train_to_directory

    overrides = {k: getattr(args, k) for k in ("dropout", "block", "shortcut", "bn_position")
                 if getattr(args, k) is not None}
    if args.milestones and args.schedule != "milestones":
        raise UsageError(f"--milestones needs --schedule milestones (got --schedule {args.schedule})")
    with user_input():
        model_config, train_config, data_config = _train_configs(args, overrides)
    out = args.out or Path("runs") / f"{model_config.name}-{args.dataset}"
    summary = train_to_directory(model_config, train_config, data_config, out,
                                 device=args.device, resume=args.resume,
                                 progress=not args.quiet)
    print(f"{summary['model']} on {args.dataset}: val accuracy {summary['val_accuracy']:.4f}, "
          f"test accuracy {summary['test_accuracy']:.4f} "
          f"({summary['parameters'] / 1e6:.2f}M parameters)")
    print(f"wrote {out / 'checkpoint.pt'} and {out / 'metrics.json'}")
    return 0


def _train_configs(args: argparse.Namespace, overrides: dict[str, Any]):
    from resnet_core.data import DataConfig
    from resnet_core.models import parse_model_name
    from resnet_core.optim import WRN_STEP_FRACTIONS
    from resnet_core.train import TrainConfig

    model_config = parse_model_name(args.model, **overrides)
    train_config = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
        momentum=args.momentum, weight_decay=args.weight_decay,
        exempt_bn_and_bias=args.exempt_bn_and_bias, schedule=args.schedule,
        milestones=tuple(args.milestones or WRN_STEP_FRACTIONS), gamma=args.gamma,
        warmup_epochs=args.warmup_epochs, label_smoothing=args.label_smoothing,
        grad_clip=args.grad_clip, amp=args.amp, channels_last=args.channels_last,
        compile=args.compile, seed=args.seed, deterministic=args.deterministic,
    )
    data_config = DataConfig(dataset=args.dataset, root=args.root, download=args.download,
                             val_size=args.val_size, subset=args.subset, augment=args.augment)
    return model_config, train_config, data_config


def cmd_evaluate(args: argparse.Namespace) -> int:
    from search.single_run import evaluate_checkpoint

    if args.checkpoint is not None:
        result = evaluate_checkpoint(args.checkpoint, dataset=args.dataset, root=args.root,
                                     split=args.split, device=args.device)
    else:
        from search.retrieve import evaluate_model_uri

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


COMMANDS = {
    "models": cmd_models,
    "train": cmd_train,
    "evaluate": cmd_evaluate,
}


def _search_command(name: str):
    from search import commands

    return getattr(commands, f"cmd_{name}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = COMMANDS.get(args.command) or _search_command(args.command)
    from resnet_core.checkpoint import CheckpointError
    from resnet_core.data import DataConfigError
    from resnet_core.train import DivergedError
    from search.config import ConfigError

    try:
        _check_device(getattr(args, "device", None))
        return handler(args)
    except (UsageError, ConfigError, DataConfigError, CheckpointError, FileNotFoundError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"resnet-search: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except DivergedError as error:
        print(f"resnet-search: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("resnet-search: interrupted", file=sys.stderr)
        return 130


def _check_device(device: str | None) -> None:
    """--device must name a device this machine has, before anything starts."""
    if device is None:
        return
    import torch

    try:
        chosen = torch.device(device)
    except RuntimeError:
        raise UsageError(f"--device {device!r} is not a device; use cpu, cuda or cuda:N") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: this machine has no CUDA GPU; use --device cpu")
    if chosen.type == "cuda" and (chosen.index or 0) >= torch.cuda.device_count():
        raise UsageError(f"--device {device}: only {torch.cuda.device_count()} GPU(s) here")
    if chosen.type not in ("cpu", "cuda"):
        raise UsageError(f"--device {device!r}: use cpu, cuda or cuda:N")


@contextlib.contextmanager
def user_input():
    """Validation errors of configs built from arguments are the user's: exit code 2."""
    from search.config import ConfigError

    try:
        yield
    except ValueError as error:
        raise ConfigError(str(error)) from None


if __name__ == "__main__":
    sys.exit(main())
