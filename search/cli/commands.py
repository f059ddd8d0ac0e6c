"""The search commands: run, resume, status, best, ui (argument parsing lives in cli.py)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from search.studyfile.config import load_study
from search.tracking.tags import champion_uri


def _print_outcome(outcome) -> None:
    from search.studyfile.config import config_params
    from search.tracking.summary import model_label

    best = outcome.best
    model, train = best["config"]["model"], best["config"]["train"]
    # Named as `best`, `status` and the report name it: from the trial run's params.
    name = model_label(config_params(model=model))
    counts = ", ".join(f"{n} {status}" for status, n in sorted(outcome.outcomes.items()))
    print(f"\nstudy {outcome.name}: {outcome.trials} trials" + (f" ({counts})" if counts else ""))
    print(f"best trial {best['trial_id']}: {name}, "
          f"{train['optimizer']} lr={train['lr']:.4g}, dropout={model.get('dropout', 0):.3g}")
    print(f"  {best['metric']} {best['value']:.4f} (epoch {best['epoch']}), "
          f"test accuracy {outcome.test_accuracy:.4f}")
    print(f"registered model: {champion_uri(outcome.registered_model)} "
          f"(version {outcome.model_version})")
    print(f"dashboard: {_dashboard_command(outcome.tracking_uri, _experiment_of(outcome))}")
    for line in outcome.phases:
        print(line)


def _dashboard_command(uri: str, experiment_id: str) -> str:
    if uri.startswith(("http://", "https://")):
        return f"open {experiment_runs_url(uri, experiment_id)}"
    return (f"resnet-search ui --tracking-uri {uri}   (then open "
            f"{experiment_runs_url(DASHBOARD, experiment_id)})")


DASHBOARD = "http://127.0.0.1:5000"  # `ui`'s default address


def experiment_runs_url(dashboard: str, experiment_id: str) -> str:
    """The page of an experiment's runs in MLflow's dashboard, in its Model training mode.

    MLflow 3 keeps a GenAI / Model training choice per browser, and a fresh browser starts
    on GenAI (a welcome page, an experiment's trace overview); `workflowType` in the URL
    opens the training runs whatever the browser chose before.
    """
    return f"{dashboard.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def _experiment_of(outcome) -> str:
    from search.tracking.store import client_for

    return client_for(outcome.tracking_uri).get_run(outcome.study_run_id).info.experiment_id


def cmd_check(args: argparse.Namespace) -> int:
    """Validate a study file and print the resolved study; starts nothing (no Ray, no MLflow)."""
    from search.cli.check import format_study, resolve_study

    resolved = resolve_study(load_study(args.study))
    print(json.dumps(resolved, indent=2) if args.json else format_study(resolved))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from search.study.run import run_study

    config = load_study(args.study, name=args.name)
    _before_ray(args.quiet)
    outcome = run_study(config, address=args.address, tracking_uri=args.tracking_uri)
    _print_outcome(outcome)
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from search.study.run import StudyAlreadyCompleted, resume_study

    _before_ray(args.quiet)
    try:
        outcome = resume_study(args.name, address=args.address, tracking_uri=args.tracking_uri)
    except StudyAlreadyCompleted as done:
        print(done)
        return 0
    _print_outcome(outcome)
    return 0


def _before_ray(quiet: bool) -> None:
    """What `run` and `resume` set before Ray is imported: its token mode and what it prints."""
    import logging
    import warnings

    from search.study.interrupt import hide_tunes_resume_hint
    from search.study.ray_session import use_the_token_found_here

    use_the_token_found_here()  # before anything imports Ray
    hide_tunes_resume_hint()

    # torch.export explains its shape specialisation when the champion is logged: noise here.
    logging.getLogger("torch._export").setLevel(logging.ERROR)
    logging.getLogger("torch.export").setLevel(logging.ERROR)
    if quiet:
        os.environ["RESNET_SEARCH_QUIET"] = "1"
    # A resumed trial reports its epochs again from its checkpoint: Optuna keeps the first
    # value of a step and warns of each repeat, which is expected here.
    warnings.filterwarnings("ignore", message="The reported value is ignored because this step",
                            category=UserWarning)
    if os.environ.get("RESNET_SEARCH_QUIET"):
        # Quiet means the study's own lines and errors: not MLflow's notes on the registration,
        # nor Ray's on its first token, nor Tune's on a stop (start_ray keeps Ray's INFO out).
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        for name in ("ray._private.authentication.authentication_token_setup", "ray.tune"):
            logging.getLogger(name).setLevel(logging.ERROR)


def cmd_status(args: argparse.Namespace) -> int:
    from search.results.retrieve import study_status

    status = study_status(args.name, args.tracking_uri)
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    counts = ", ".join(f"{n} {s}" for s, n in sorted(status["counts"].items())) or "no trials"
    print(f"study {status['study']} ({status['status']}): {len(status['trials'])} of "
          f"{status['num_samples']} trials: {counts}")
    print(f"storage {status['storage_path']}, tracking {status['tracking_uri']}")
    metric = f"best {status['metric']}"
    print(f"\n{'rank':>4} {'#':>3} {'trial':<12} {'status':<11} {'model':<22} {'optimizer':<9} "
          f"{'lr':>9} {'epochs':>6} {metric:>16}")
    for place, t in enumerate(status["trials"], 1):
        print(f"{place if t['ranked'] else '-':>4} {t['optuna_trial_number']:>3} "
              f"{t['trial_id'] or '?':<12} {t['status']:<11} {t['model']:<22} "
              f"{t['optimizer'] or '?':<9} {_num(t['lr']):>9} {t['epochs']:>6} "
              f"{_num(t['value'], 4):>16}")
    best = status["best"]
    if best:
        print(f"\nbest: trial {best['trial_id']} ({best['model']}), {metric} "
              f"{_num(best['value'], 4)} at epoch {best['best_epoch']}")
    champion = status["champion"]
    if champion is not None and status["test_accuracy"] is not None:
        alias = f" = {champion_uri(champion['model'])}" if champion["is_alias"] else ""
        print(f"champion: {champion['uri']}{alias} (trial {status['champion_trial_id']}), "
              f"test accuracy {status['test_accuracy']:.4f}")
    return 0


def _num(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}g}" if digits == 3 else f"{value:.{digits}f}"


def cmd_best(args: argparse.Namespace) -> int:
    from search.results.retrieve import export_best_checkpoint, study_status

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
    from search.tracking import store as tracking

    _, client, study_run = tracking.open_study(args.name, args.tracking_uri)
    front = front_rows(client, study_run)
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


def cmd_report(args: argparse.Namespace) -> int:
    """An offline HTML report (and PNG charts) of a study, from the tracking store; the same
    files go to the study run, where MLflow's artifact view previews the PNGs as images."""
    from pathlib import Path

    from search.results.report import build_report

    out = args.out or Path("reports") / args.name
    files = build_report(args.name, out, args.tracking_uri, log=True)
    page, charts = files[0], files[1:]
    print(f"report of {args.name}: {page}" + (f" and {len(charts)} PNG charts in {charts[0].parent}"
                                              if charts else " (no PNG charts: see the page's notes)"))
    if args.open:
        import webbrowser

        webbrowser.open(page.resolve().as_uri())
    return 0


def cmd_studies(args: argparse.Namespace) -> int:
    """Every study in the tracking store, newest first."""
    from search.results.studies import format_studies, list_studies

    listing = list_studies(args.tracking_uri)
    print(json.dumps(listing, indent=2) if args.json else format_studies(listing))
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    """Open the MLflow dashboard on the study store (localhost unless --host says otherwise)."""
    import subprocess
    import threading

    from search.studyfile.paths import resolve_tracking_uri

    uri = resolve_tracking_uri(args.tracking_uri)
    if uri.startswith(("http://", "https://")):
        print(f"the tracking server {uri} serves its own dashboard: open it in a browser")
        return 0
    check_port_free(args.host, args.port)
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
               "--host", args.host, "--port", str(args.port), "--workers", str(args.workers)]
    # MLflow's job execution (huey consumers for its GenAI scorers and trace roll-ups) is
    # seven more processes, each importing MLflow, that a study store has no job for: with
    # them and MLflow's 4 server workers the dashboard took 24 s to answer on a 2-core
    # machine, without them 11 s (benchmarks/RESULTS.md, "Dashboard start-up").
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}
    print(f"MLflow dashboard on http://{args.host}:{args.port} (Ctrl-C stops it)", file=sys.stderr)
    child = subprocess.Popen(command, start_new_session=True, env=env)
    local = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    threading.Thread(target=_announce_study_runs, args=(f"http://{local}:{args.port}", child),
                     daemon=True).start()
    return supervise(child)


def _announce_study_runs(dashboard: str, child, patience_s: float = 300.0) -> None:
    """Once the dashboard answers, print the URL of the newest study's runs (Model training
    mode; the server's REST API says which experiment, so nothing heavy is imported here)."""
    import time
    import urllib.request

    deadline = time.monotonic() + patience_s
    while child.poll() is None and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{dashboard}/health", timeout=2):
                break
        except OSError:
            time.sleep(0.5)
    else:  # the server stopped, or never answered: nothing to announce
        return
    try:
        experiment = newest_study_experiment(dashboard)
    except (OSError, ValueError, KeyError):  # an older or stricter server: the plain address
        experiment = None
    if experiment is None:
        print(f"no study in this store yet: {dashboard}", file=sys.stderr, flush=True)
    else:
        print(f"the newest study's runs: {experiment_runs_url(dashboard, experiment)}",
              file=sys.stderr, flush=True)


def newest_study_experiment(dashboard: str) -> str | None:
    """The experiment id of the newest study run a dashboard's server holds; None if none."""
    from search.tracking import tags

    experiments = _rest(dashboard, "experiments/search", {"max_results": 1000})
    ids = [e["experiment_id"] for e in experiments.get("experiments", [])]
    if not ids:
        return None
    runs = _rest(dashboard, "runs/search", {
        "experiment_ids": ids, "filter": f"tags.`{tags.KIND}` = '{tags.KIND_STUDY}'",
        "order_by": ["attributes.start_time DESC"], "max_results": 1})
    found = runs.get("runs", [])
    return found[0]["info"]["experiment_id"] if found else None


def _rest(dashboard: str, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
    import urllib.request

    request = urllib.request.Request(f"{dashboard}/api/2.0/mlflow/{endpoint}",
                                     data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def check_port_free(host: str, port: int) -> None:
    """One line now, not the server's traceback (serve) or a dashboard announced on a port
    it never got (ui, which then exited 0)."""
    import socket

    from search.studyfile.config import ConfigError

    try:
        with socket.create_server((host, port)):  # SO_REUSEADDR, as uvicorn binds
            pass
    except OSError as error:
        reason = os.strerror(error.errno) if error.errno else str(error)
        raise ConfigError(f"--port {port}: {host}:{port} is not free ({reason}); "
                          f"pass a free --port") from None


STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")
STOP_GRACE_S = 10.0


def supervise(child) -> int:
    """Wait for a server in its own process group; on SIGINT/SIGTERM/SIGHUP stop all of it.

    `mlflow ui` starts uvicorn workers and huey job consumers and does not stop them
    when it is terminated, so the whole group (and any descendant that left it) is
    stopped here: nothing of the dashboard outlives the command.
    """
    import signal
    import time

    received: list[int] = []
    previous = {sig: signal.signal(getattr(signal, sig), lambda n, _f: received.append(n))
                for sig in STOP_SIGNALS if hasattr(signal, sig)}
    try:
        while child.poll() is None and not received:
            time.sleep(0.2)
    finally:
        stop_process_tree(child.pid)
        child.wait()
        for sig, handler in previous.items():
            signal.signal(getattr(signal, sig), handler)
    return 128 + received[0] if received else child.returncode


def stop_process_tree(leader: int, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM a process group and every descendant of its leader; SIGKILL what is left."""
    import signal
    import time

    # Snapshot first: once the leader exits its children are reparented and untraceable.
    members = _descendants(leader) | {leader}
    try:
        os.killpg(leader, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        pass
    for pid in members:  # descendants that started their own group or session
        try:
            os.kill(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and _alive(members | _group(leader)):
        time.sleep(0.1)
    for pid in _alive(members | _group(leader)):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _proc_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, process group, state) from /proc (empty where there is none)."""
    from pathlib import Path

    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process ended while we looked
            continue
        fields = text[text.rindex(")") + 2:].split()  # after "(comm)", which may hold spaces
        table[int(stat.parent.name)] = (int(fields[1]), int(fields[2]), fields[0])
    return table


def _descendants(root: int) -> set[int]:
    table = _proc_table()
    found, frontier = set(), [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, (ppid, _, _) in table.items() if ppid == parent]
        found.update(children)
        frontier.extend(children)
    return found


def _group(pgid: int) -> set[int]:
    return {pid for pid, (_, group, _) in _proc_table().items() if group == pgid}


def _alive(pids: set[int]) -> set[int]:
    """Those of pids still running (a zombie has stopped; its parent reaps it)."""
    table = _proc_table()
    return {p for p in pids if p in table and table[p][2] != "Z"}


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve a study's champion: POST {"inputs": [[...images...]]} to /invocations.

    Input: float32 (N, C, H, W), pixel values 0..255 as the dataset stores them; output:
    class probabilities (N, classes). `mlflow models serve` in this environment (no new
    virtualenv), stopped as a whole on SIGINT/SIGTERM like `ui`.
    """
    import subprocess

    from search.tracking.store import open_study, registered_champion

    check_port_free(args.host, args.port)
    uri, client, study_run = open_study(args.name, args.tracking_uri)
    champion = registered_champion(client, study_run, args.name)
    model_uri = champion["uri"]  # the study's own version: the alias may be a newer study's
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri,
               "--env-manager", "local", "--host", args.host, "--port", str(args.port)]
    print(f"serving {model_uri} on http://{args.host}:{args.port}/invocations (Ctrl-C stops it)",
          file=sys.stderr)
    # mlflow starts `uvicorn` by name: the environment's own bin folder must come first.
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    env = {**os.environ, "PATH": path, "MLFLOW_TRACKING_URI": uri, "MLFLOW_REGISTRY_URI": uri}
    return supervise(subprocess.Popen(command, start_new_session=True, env=env))
