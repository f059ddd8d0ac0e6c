"""The `resnet-search` command line.

The parser (the line above is `--help`'s description) and `main`, which runs one command.
Each command lives in the module of this folder named after it (run.py: run and resume,
status.py: status, best and studies, train.py: models, train and evaluate, ...). Every
command validates its input before starting anything: bad input prints one line
(`resnet-search: error: ...`) and exits with code 2. Heavy imports (Ray, MLflow, torch)
happen inside the commands that need them.
"""

from __future__ import annotations

import argparse
import atexit
import os
import sys
import tempfile
import time
import traceback
import typing
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any, NoReturn

from resnet_core import (
    DATASETS,
    CheckpointError,
    DataConfig,
    DataConfigError,
    DivergedError,
    ModelConfig,
    TrainConfig,
    field_types,
    help_text,
    scalar_type,
)
from search.cli.check import cmd_check
from search.cli.errors import EXIT_USAGE, UsageError
from search.cli.predict import cmd_predict
from search.cli.report import cmd_report
from search.cli.run import cmd_resume, cmd_run
from search.cli.serve import cmd_serve
from search.cli.status import STATUS_TOP, cmd_best, cmd_status, cmd_studies
from search.cli.train import cmd_evaluate, cmd_models, cmd_train
from search.cli.ui import cmd_ui
from search.study.interrupt import StudyFailed, StudyInterrupted
from search.studyfile.config import ConfigError
from search.studyfile.paths import home
from search.telemetry import turn_off_usage_reports


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not the whole usage text
        # An argument may hold a newline or a terminal escape: shown escaped, as Python writes it.
        shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {shown} (see --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 1")
    return value


def _class_count(text: str) -> int:
    value = _positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 2 (a classifier tells classes apart)")
    return value


def _folder(text: str) -> Path:
    """A folder to write into: it may not exist yet, but it and its parents must not be files
    (the command would fail at its first write, after the work)."""
    if "\x00" in text:  # no file system takes it; pathlib would only say "does not exist"
        raise argparse.ArgumentTypeError(f"{text!r}: a path cannot hold a NUL character")
    path = Path(text)
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r}: {existing} is a file, not a folder")
    return path


def _export_path(text: str) -> str:
    """A checkpoint file, or a folder for one (an existing folder, or a path ending in '/')."""
    _folder(text if text.endswith("/") else str(Path(text).parent))
    return text


def _port(text: str) -> int:
    value = _positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} must be a port in 1-65535")
    return value


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="resnet-search", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    models = commands.add_parser("models", help="list the model registry")
    models.add_argument("--json", action="store_true", help="machine-readable output")
    models.add_argument("--input-size", type=_positive_int, default=32,
                        help="image side for FLOP counts (default 32)")
    models.add_argument("--num-classes", type=_class_count, default=10,
                        help="classifier outputs the parameters are counted at (default 10; "
                             "torchvision's ImageNet counts: 1000)")

    train = commands.add_parser("train", help="train one model")
    train.add_argument("--model", default="wrn-16-2", help="registry name, e.g. resnet-20, wrn-16-2")
    _add_train_flags(train)
    train.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if present)")
    train.add_argument("--out", type=_folder, default=None,
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
    predict = commands.add_parser(
        "predict", help="classify image files with a study's champion, a model URI or a checkpoint")
    predict.add_argument("source", help="a study's name (its champion), models:/NAME@champion, "
                                        "models:/NAME/VERSION, runs:/..., or a checkpoint file")
    predict.add_argument("files", nargs="+", help="image files or folders (every image in them)")
    predict.add_argument("--top-k", type=_positive_int, default=3, help="classes per file (3)")
    predict.add_argument("--batch-size", type=_positive_int, default=64)
    predict.add_argument("--device", default="cpu")
    predict.add_argument("--tracking-uri", default=None)
    predict.add_argument("--json", action="store_true", help="one JSON list of every file")

    _add_search_commands(commands)
    debug = "show the full traceback of an unexpected error (also: RESNET_SEARCH_DEBUG=1)"
    parser.add_argument("--debug", action="store_true", help=debug)
    for command in commands.choices.values():  # before or after the command's name
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug)
    return parser


def _add_train_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per field of the data and train configs (and the model's options), named after it.

    Everything comes from the fields' metadata (resnet_core.config.option): a field
    added there is a flag here. Defaults stay the dataclasses': a flag not given is
    not passed on.
    """
    for cls in (DataConfig, TrainConfig, ModelConfig):
        for spec in fields(cls):
            if cls is ModelConfig and not spec.metadata.get("model_option"):
                continue  # the rest of the network is the --model name
            _add_field_flag(parser, cls, spec)
    # Its older name, still accepted so that existing scripts keep working.
    parser.add_argument("--no-decay-bn-bias", dest="exempt_bn_and_bias", action="store_const",
                        const=True, default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def _add_field_flag(parser: argparse.ArgumentParser, cls: type, spec: Any) -> None:
    annotation = scalar_type(field_types(cls)[spec.name])
    shown = " ".join(map(str, spec.default)) if isinstance(spec.default, tuple) else spec.default
    default = "" if spec.default is None else f" (default: {shown})"
    options: dict[str, Any] = {
        "dest": spec.name, "default": argparse.SUPPRESS,
        # argparse %-formats help texts.
        "help": (help_text(spec) + default).replace("%", "%%"),
    }
    if annotation is bool:
        options["action"] = argparse.BooleanOptionalAction
    elif typing.get_origin(annotation) is tuple:
        items = typing.get_args(annotation)
        options["nargs"] = "+" if items[-1] is Ellipsis else len(items)
        options["type"] = _field_value(cls, spec.name, items[0], check_bounds=False)
    elif spec.metadata.get("choices"):
        options["choices"] = spec.metadata["choices"]
    else:
        options["type"] = _field_value(cls, spec.name, annotation)
    parser.add_argument("--" + spec.name.replace("_", "-"), **options)


def _field_value(cls: type, name: str, kind: type, check_bounds: bool = True) -> Any:
    """An argparse type: the text as the field's type, within the field's bounds."""
    bounds = cls.__dataclass_fields__[name].metadata.get("bounds") if check_bounds else None

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            what = {int: "an integer", float: "a number"}.get(kind, kind.__name__)
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if bounds is not None and value not in bounds:
            raise argparse.ArgumentTypeError(f"{text!r} must be {bounds}")
        return value

    return parse


def _add_search_commands(commands: Any) -> None:
    check = commands.add_parser("check", help="validate a study file and print the resolved study "
                                              "(starts nothing)")
    check.add_argument("study", type=Path, help="study TOML file")
    check.add_argument("--json", action="store_true", help="one JSON object")

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
    status.add_argument("--json", action="store_true", help="every trial, as one JSON object")
    shown = status.add_mutually_exclusive_group()
    shown.add_argument("--top", type=int, default=STATUS_TOP, metavar="N",
                       help=f"show the best N trials and the running ones (default {STATUS_TOP})")
    shown.add_argument("--all", action="store_true", help="show every trial")

    best = commands.add_parser("best", help="the best trial of a study")
    best.add_argument("name")
    best.add_argument("--tracking-uri", default=None)
    best.add_argument("--json", action="store_true")
    best.add_argument("--export", type=_export_path, default=None,
                      help="copy its checkpoint here: a file, or a folder (ending in '/')")
    best.add_argument("--pareto", action="store_true",
                      help="the accuracy/cost Pareto front instead (objectives of the study, "
                           "else the metric and params)")

    report = commands.add_parser("report", help="an offline HTML report of a study, with PNG charts")
    report.add_argument("name")
    report.add_argument("--tracking-uri", default=None)
    report.add_argument("--out", type=_folder, default=None,
                        help="output folder (default reports/NAME)")
    report.add_argument("--open", action="store_true", help="open the page in a browser")

    studies = commands.add_parser("studies", help="every study in the tracking store")
    studies.add_argument("--tracking-uri", default=None)
    studies.add_argument("--json", action="store_true")

    serve = commands.add_parser("serve", help="serve a study's champion over HTTP (mlflow models serve)")
    serve.add_argument("name", help="study name (serves models:/REGISTERED@champion)")
    serve.add_argument("--tracking-uri", default=None)
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default localhost only)")
    serve.add_argument("--port", type=_port, default=5001)

    ui = commands.add_parser("ui", help="open the MLflow dashboard of the local store")
    ui.add_argument("--tracking-uri", default=None)
    ui.add_argument("--host", default="127.0.0.1", help="bind address (default localhost only)")
    ui.add_argument("--port", type=_port, default=5000)
    ui.add_argument("--workers", type=_positive_int, default=1,
                    help="server worker processes (default 1: one user, requests served in threads)")


def _add_cluster_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", default=None,
                        help="Ray cluster to join: HOST:PORT, or auto for the cluster this node "
                             "is part of (default: $RAY_ADDRESS, else a Ray of its own)")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else [tracking] uri "
                             "of the study file for run, else the local store)")


# ---------------------------------------------------------------- commands

# Each command's function, from the module of this folder named after it.
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "models": cmd_models,
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "predict": cmd_predict,
    "check": cmd_check,
    "run": cmd_run,
    "resume": cmd_resume,
    "status": cmd_status,
    "best": cmd_best,
    "report": cmd_report,
    "studies": cmd_studies,
    "serve": cmd_serve,
    "ui": cmd_ui,
}


def main(argv: list[str] | None = None) -> int:
    turn_off_usage_reports()  # before MLflow or Ray is imported: they read it at import
    # MLflow's download progress bar, drawn on stderr for every checkpoint a command fetches
    # (best --export, evaluate --model-uri, a study's champion): not a command's output.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = COMMANDS[args.command]
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
    except StudyFailed as error:
        print(f"resnet-search: {error}", file=sys.stderr)
        return 1
    except StudyInterrupted as stopped:
        print(f"resnet-search: {stopped}", file=sys.stderr)
        return stopped.exit_code
    except KeyboardInterrupt:
        print("resnet-search: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader left (`resnet-search models | head`): no error of ours
        # Python's advice: point stdout at /dev/null, so that the exit's flush cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13  # as a shell reports SIGPIPE
    except Exception as error:  # a bug or a fault nobody foresaw: one line, traceback kept
        return _unexpected(error, args.debug or bool(os.environ.get("RESNET_SEARCH_DEBUG")))


def _unexpected(error: Exception, debug: bool) -> int:
    """Print one line naming the file that holds the traceback (`--debug`: the traceback)."""
    if debug:
        traceback.print_exc()
        return 1
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    where = _write_traceback("".join(traceback.format_exception(error)))
    print(f"resnet-search: unexpected error: {type(error).__name__}"
          f"{': ' + text if text else ''}; full traceback in {where} (or rerun with --debug)",
          file=sys.stderr)
    return 1


def _write_traceback(text: str) -> str:
    """RESNET_SEARCH_HOME/logs/error-TIME-PID.log, else the temp folder when home is unwritable."""
    name = f"error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    for folder in (home() / "logs", Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(f"resnet-search {' '.join(sys.argv[1:])}\n{text}")
            return str(folder / name)
        except OSError:
            continue
    return "(nowhere: no writable folder; rerun with --debug)"


def _check_device(device: str | None) -> None:
    """--device must name a device this machine has, before anything starts."""
    if device is None:
        return
    import torch  # 2-3 s: only commands given --device pay it

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


def entry_point() -> None:
    """The `resnet-search` command: `main()`, then a quick exit.

    The exit handlers run as usual (Ray's shutdown, log flushing); what is skipped is the
    interpreter's own teardown, which after a study spent ~3 s finalising torch's and
    Ray's native objects, work with no effect once the process ends. In-process callers
    of `main()` (tests) are unaffected.
    """
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    atexit._run_exitfuncs()  # noqa: SLF001 - the handlers os._exit would otherwise skip
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry_point()
