"""`resnet-search check`: a study file validated and explained, with nothing started."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import MISSING, fields
from pathlib import Path

import pytest
from common import ROOT, cli, toml_value, with_own_images

from resnet_core.config import TrainConfig, field_types, scalar_type
from resnet_core.data import OWN_DATA_FIELDS, DataConfig

MINIMAL = '[study]\nname = "t"\n[space]\nfamily = "wrn"\ndepth = 10\n'


def check(*args: str, home: Path | None = None) -> subprocess.CompletedProcess:
    return cli("check", *args, timeout=120, env={
        "RESNET_SEARCH_HOME": str(home or ROOT / ".no-home"), "MLFLOW_TRACKING_URI": None})


def example_value(cls: type, spec) -> object:
    """A valid value of a field that differs from its default where it can."""
    kind = scalar_type(field_types(cls)[spec.name])
    choices, bounds = spec.metadata["choices"], spec.metadata["bounds"]
    if choices:
        return choices[-1]
    if kind is bool:
        return not spec.default
    if kind is int:
        return (bounds.low if bounds else 0) + 2
    if kind is float:
        return 0.5
    if kind is str:
        return "elsewhere"
    return [v + 1 if isinstance(v, int) else v / 2 for v in spec.default]  # tuples


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_study_file_checks_and_prints_its_space(path, tmp_path):
    path = with_own_images(path, tmp_path)
    result = check(str(path), home=tmp_path)
    assert result.returncode == 0, result.stderr
    space = result.stdout.split("[space]", 1)[1].split("\n[scheduler]", 1)[0]
    import tomllib

    for key in tomllib.loads(path.read_text())["space"]:
        assert f"  {key} " in space, (key, space)
    resolved = json.loads(check(str(path), "--json", home=tmp_path).stdout)
    assert [row["name"] for row in resolved["space"]] == list(
        tomllib.loads(path.read_text())["space"])
    assert set(resolved) == {"file", "study", "recipe", "space", "constraints", "scheduler",
                             "resources", "tracking", "storage", "dataset"}


def test_every_data_and_train_field_is_a_study_key(tmp_path):
    # A built-in dataset, so its fields only: the fields of a user's own data (path,
    # image_size, ...) apply to dataset folder or arrays alone (test_folder_study.py).
    chosen = {
        "data": {f.name: example_value(DataConfig, f) for f in fields(DataConfig)
                 if f.name not in OWN_DATA_FIELDS} | {"dataset": "synthetic"},
        # init names weights that must fit the network: tests/search/cli/test_init.py.
        "train": {f.name: example_value(TrainConfig, f) for f in fields(TrainConfig)
                  if f.name != "init"},
    }
    assert chosen["train"]["epochs"] >= chosen["train"]["warmup_epochs"]
    text = MINIMAL + "".join(
        f"[{section}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in values.items())
        for section, values in chosen.items())
    path = tmp_path / "every-field.toml"
    path.write_text(text)
    result = check(str(path), "--json", home=tmp_path)
    assert result.returncode == 0, result.stderr
    recipe = json.loads(result.stdout)["recipe"]
    expected_root = str((ROOT / "elsewhere").resolve())  # made absolute as `run` does
    assert recipe["data"] == {**chosen["data"], "root": expected_root,
                              **dict.fromkeys(OWN_DATA_FIELDS, None), "skip_unreadable": False}
    assert recipe["train"] == {**chosen["train"], "init": None}
    for cls, section in ((DataConfig, "data"), (TrainConfig, "train")):
        for spec in fields(cls):  # each value differs from the default: it was really read
            if spec.default is not MISSING and spec.name not in ("root", "init",
                                                                 *OWN_DATA_FIELDS):
                default = spec.default
                assert chosen[section][spec.name] != (list(default) if isinstance(
                    default, tuple) else default), spec.name


def test_the_space_says_when_each_parameter_is_sampled(tmp_path):
    path = tmp_path / "conditional.toml"
    path.write_text('[study]\nname = "c"\n[space]\noptimizer = ["sgd", "adam"]\n'
                    'family = ["wrn", "resnet"]\ndepth = [10, 14, 16, 20]\nwidth = [2, 4]\n'
                    'momentum = { low = 0.8, high = 0.9 }\nbn_position = ["before_add", '
                    '"after_add"]\nblock = ["basic", "bottleneck"]\n')
    result = check(str(path), "--json", home=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)["space"]}
    assert rows["width"]["sampled"] == "when family is wrn"
    assert rows["bn_position"]["sampled"] == "when family is resnet"
    assert rows["block"]["sampled"] == "when family is resnet"
    # Said in this space's optimizers: nesterov and rmsprop use momentum too, but never come.
    assert rows["momentum"]["sampled"] == "when optimizer is sgd"
    assert rows["depth"]["depths"] == {"wrn": [10, 16], "resnet.basic": [14, 20],
                                       "resnet.bottleneck": [20]}
    assert rows["family"] == {"name": "family", "kind": "choice", "domain": "['wrn', 'resnet']",
                              "sampled": "always"}


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ("[train]\ngamma = 0\n", "bad.toml: [train] gamma: 0 must be > 0"),
        ("[train]\nepochz = 3\n", "bad.toml: [train] unknown key 'epochz' (did you mean"),
        ("[data]\nsynthetic_shape = [3, 32]\n",
         "bad.toml: [data] synthetic_shape: [3, 32] must be a list of 3 integers"),
    ],
    ids=["gamma", "unknown-key", "shape"],
)
def test_a_bad_value_exits_2_with_one_line(patch, message, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(MINIMAL + patch)
    result = check(str(path), home=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"resnet-search: error: {message}"), lines


def test_check_starts_nothing_loads_no_data_and_redacts_passwords(tmp_path):
    path = tmp_path / "cluster.toml"
    path.write_text(MINIMAL + '[data]\ndataset = "cifar10"\nroot = "/nonexistent"\n'
                    '[tracking]\nuri = "postgresql://user:hunter2@db.invalid/mlflow"\n')
    code = ("import sys\nfrom search.cli.main import main\nassert main(['check', sys.argv[1]]) == 0\n"
            "loaded = sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'mlflow', 'optuna'})\n"
            "print('LOADED', loaded)\n")
    result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                            text=True, cwd=ROOT, timeout=120,
                            env={**os.environ, "RESNET_SEARCH_HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr  # the missing dataset is `run`'s business
    assert "LOADED []" in result.stdout
    assert "hunter2" not in result.stdout and "postgresql://user:***@db.invalid" in result.stdout
    assert not (tmp_path / "ray_results").exists() and not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize("environment, file_uri, expected", [
    ("sqlite:///env.db", "sqlite:///file.db", ("sqlite:///env.db", "$MLFLOW_TRACKING_URI")),
    (None, "sqlite:///file.db", ("sqlite:///file.db", "[tracking] uri")),
    (None, None, ("sqlite:///{home}/mlflow.db", "the local store")),
])
def test_check_names_the_tracking_uri_run_would_use_and_where_it_came_from(
        environment, file_uri, expected, tmp_path):
    """The order `run` resolves it in: the environment, then the study file, then the home."""
    path = tmp_path / "study.toml"
    path.write_text(MINIMAL + (f'[tracking]\nuri = "{file_uri}"\n' if file_uri else ""))
    env = {**os.environ, "RESNET_SEARCH_HOME": str(tmp_path)}
    env.pop("MLFLOW_TRACKING_URI", None)
    if environment:
        env["MLFLOW_TRACKING_URI"] = environment
    result = cli("check", "--json", str(path), timeout=120, full_env=env)
    assert result.returncode == 0, result.stderr
    tracking = json.loads(result.stdout)["tracking"]
    uri, source = expected
    assert (tracking["uri"], tracking["uri_from"]) == (uri.format(home=tmp_path.resolve()), source)
