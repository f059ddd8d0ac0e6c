"""The study's storage (Ray's results folder): writable at the start, and what a full disk
leaves behind repaired on `resume`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from search.studyfile.config import ConfigError
from search.studyfile.paths import home_hint


def check_storage_writable(storage_path: str) -> None:
    """A local results folder that cannot be written is an error now, before anything starts."""
    import tempfile

    if "://" in storage_path:
        return
    try:
        Path(storage_path).mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=storage_path, prefix=".write-probe-"):
            pass
    except OSError as error:
        reason, hint = error.strerror or error, home_hint(storage_path)
        if hint:  # the default results folder, under the home folder
            raise ConfigError(f"results folder {storage_path} is not writable ({reason})"
                              f"{hint}") from None
        raise ConfigError(f"[storage] path {storage_path} is not writable ({reason}); "
                          f"pick a writable path") from None


def storage_is_full(storage_path: str) -> bool:
    """Whether 1 MiB more cannot be written to a local results folder (ENOSPC)."""
    import errno
    import tempfile

    if "://" in storage_path:
        return False
    try:
        with tempfile.TemporaryFile(dir=storage_path, prefix=".space-probe-") as probe:
            probe.write(bytes(1 << 20))
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as error:
        return error.errno == errno.ENOSPC
    return False


DRIVER_STATE_TAG = "resnet_search.driver_state"  # Tune's local copy of the experiment state


def keep_driver_state(client, study_run_id: str, name: str) -> None:
    """Record where this driver's local copy of Tune's experiment state is: a full disk can
    leave the copy on storage torn, and `resume` repairs it from this one."""
    import glob

    import ray

    try:
        session = ray._private.worker._global_node.get_session_dir_path()
    except AttributeError:
        return
    found = glob.glob(os.path.join(session, "artifacts", "*", name, "driver_artifacts"))
    if found:
        client.set_tag(study_run_id, DRIVER_STATE_TAG, max(found, key=os.path.getmtime))


def repair_experiment_state(experiment_path: str, staging: str | None) -> None:
    """Put back the driver's local copy of Tune's state files where the copy on storage differs.

    Tune writes its experiment state, searcher state and tuner in the driver's staging folder
    and copies them to storage; a full disk can cut off any of them on storage (a torn JSON,
    or a torn searcher pickle that `Tuner.restore` fails on, or an older state that restarts
    trials as new ones). The driver's copy is the source of those uploads, so it is never
    older than storage: where the two differ, `resume` uses it.
    """
    import shutil

    if not staging or not Path(staging).is_dir() or not Path(experiment_path).is_dir():
        return
    restored = []
    for file in sorted(Path(staging).iterdir()):
        target = Path(experiment_path) / file.name
        if file.is_file() and (not target.is_file() or target.read_bytes() != file.read_bytes()):
            shutil.copyfile(file, target)
            restored.append(file.name)
    if restored:
        print(f"resnet-search: Tune's state on storage differed from the driver's copy (storage "
              f"full); restored {', '.join(restored)} from {staging}", file=sys.stderr)


def stand_in_for_deleted_checkpoints(experiment_path: str) -> list[str]:
    """An empty folder for each trial's latest checkpoint that Tune's saved state names but
    storage no longer holds; the trial folders given one.

    Tune deletes a checkpoint past `num_to_keep` as soon as a newer one arrives, and saves
    its experiment state every few seconds: a driver killed between the two leaves a state
    whose trial resumes from a deleted checkpoint, and Tune's restore fails on it at every
    retry ("does not exist on storage anymore"), failing the trial (found by the chaos
    loop). With the folder there, the trial's own restore (search.trial.trainable) finds
    nothing readable in it and goes on as from a torn checkpoint: an older one, else from
    scratch, saying so on its trial run."""
    import json

    states = sorted(Path(experiment_path).glob("experiment_state-*.json"))
    if not states:
        return []
    try:
        trial_data = json.loads(states[-1].read_text())["trial_data"]
    except (OSError, ValueError, KeyError):
        return []  # a torn state: Tune's restore says so itself
    made = []
    for trial_json, runtime_json in trial_data:
        try:
            trial_id = json.loads(trial_json)["trial_id"]
            name = json.loads(runtime_json).get("last_result", {}).get("checkpoint_dir_name")
        except (ValueError, KeyError, AttributeError):
            continue
        folder = Path(experiment_path) / f"trial_{trial_id}"
        if name and folder.is_dir() and not (folder / name).exists():
            (folder / name).mkdir()
            made.append(f"{folder.name}/{name}")
    if made:
        print(f"resnet-search: Tune's state names checkpoints deleted since it was saved: "
              f"{', '.join(made)}; those trials go on from an older checkpoint or from scratch",
              file=sys.stderr)
    return made
