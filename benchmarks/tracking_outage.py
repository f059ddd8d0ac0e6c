"""Cost of a tracking outage: the write queue (as shipped) against waiting in the Tune loop.

    .venv/bin/python benchmarks/tracking_outage.py queue 25
    .venv/bin/python benchmarks/tracking_outage.py wait 25    # with the change below applied

A 2-trial, 10-epoch study on a real `mlflow server` (PostgreSQL at 127.0.0.1:5432, the test
helpers' server); after the first epoch reaches MLflow the server is stopped for N seconds,
then restarted. Prints the study's wall time and how many epochs were reported while the
server was down. `wait` mode is the old behaviour: apply the `tracking-queue` mutation of
tests/mutate.py by hand (TrackingWriter.submit runs the job at once) and keep MLflow's
default retries (7, back-off doubling, about 2 minutes), inside which the driver waits.
Results: RELIABILITY.md.
"""
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "search"), str(ROOT / "tests"), str(ROOT)]
from study_helpers import kill_session, study_toml, wait_for  # noqa: E402
from tracking_server import TrackedStudies, tracking_server  # noqa: E402

mode, outage = sys.argv[1], float(sys.argv[2])
tmp = Path(tempfile.mkdtemp(prefix=f"outage-{mode}-"))
with tracking_server(tmp / "server") as server:
    home = tmp / "home"
    home.mkdir()
    studies = TrackedStudies(home, server.uri)
    epochs = 10
    path = studies.write("outage", study_toml(
        "outage", study={"num_samples": 2, "max_concurrent_trials": 1},
        train={"epochs": epochs, "batch_size": 32},
        space={"family": "wrn", "depth": 16, "width": 4}, replace_space=True))
    start = time.time()
    driver = studies.start("run", str(path), *studies.uri_args)
    try:
        wait_for(lambda: any(r.data.metrics.get("epoch", 0) >= 1 for r in studies.trial_runs("outage")),
                 timeout=300, what="first epoch", interval=0.5)
        down, up = server.outage(outage)
        code = driver.wait(timeout=900)
        end = time.time()
    finally:
        kill_session(driver)
    client = studies.client()
    during, total = 0, 0
    for run in studies.trial_runs("outage"):
        h = client.get_metric_history(run.info.run_id, "val_accuracy")
        total += len(h)
        during += sum(down * 1000 < m.timestamp < up * 1000 for m in h)
    log = (home.parent / "driver.log").read_text()
    print(json.dumps({"mode": mode, "outage_s": outage, "exit": code, "study_wall_s": round(end - start, 1),
                      "epochs_logged": total, "epochs_reported_while_down": during,
                      "behind_notice": "tracking is behind" in log}))
