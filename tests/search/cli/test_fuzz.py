"""Fuzzed input: study files, command lines and checkpoint files that no one wrote by hand.

Every case is either accepted or refused with the platform's one line and exit code 2:
never a traceback, never "unexpected error", never a started Ray or a created store.
The study files start from the shipped ones (configs/) and are mutated by Hypothesis:
values of other types, huge and non-finite numbers, unicode, unknown keys, empty and
deleted sections, deep nesting, `${VAR}` forms, and raw edits of the TOML text. The cases
are derandomized, so CI runs the same ones every time; a failure prints the case.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import tomllib
from common import ROOT, toml_document
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from study_helpers import cli_in_process

SHIPPED = sorted((ROOT / "configs").glob("*.toml"))
BASES = [tomllib.loads(path.read_text()) for path in SHIPPED]
# 400 cases a test, 1,200 study files and command lines in all; `make fuzz` runs more.
FUZZ = settings(max_examples=int(os.environ.get("RESNET_SEARCH_FUZZ_EXAMPLES", 400)), deadline=None,
                derandomize=True, database=None, suppress_health_check=list(HealthCheck))


def assert_accepted_or_refused(code: int, stderr: str, case: str) -> None:
    """Exit 0, or exit 2 with one line that says what was wrong: nothing in between."""
    assert "Traceback" not in stderr and "unexpected error" not in stderr, f"{case}\n{stderr}"
    assert code in (0, 2), f"exit {code} for {case}\n{stderr}"
    if code == 2:
        lines = [line for line in stderr.split("\n") if line.strip()]  # a terminal's lines
        # `resnet-search: error: ...`, or argparse's `resnet-search COMMAND: error: ...`
        assert lines and re.match(r"resnet-search( [a-z]+)?: error: .{10}", lines[-1]), \
            f"{case}\n{stderr}"


@pytest.fixture(autouse=True)
def _private_home(tmp_path_factory, monkeypatch):
    """A home of its own: what a case creates there (a store, Ray results) would be seen."""
    home = tmp_path_factory.mktemp("fuzz-home")
    monkeypatch.setenv("RESNET_SEARCH_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("RESNET_SEARCH_FUZZ_VAR", "digits")
    yield home
    made = sorted(p.name for p in home.iterdir())
    assert made == [], f"a fuzz case created {made} (a store, Ray results or a traceback file)"
    if "ray" in sys.modules:
        import ray

        assert not ray.is_initialized(), "a fuzz case started Ray"


# ---------------------------------------------------------------- values and TOML

SCALARS = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([0, -1, 1, 2**31, 10**18, -(10**18)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=30),
    st.sampled_from(["", " ", "${RESNET_SEARCH_FUZZ_VAR}", "${UNSET_FUZZ_VAR}", "$HOME/x",
                     "${", "${}", "../../etc", "/dev/null", "\x00", "é", "🙂" * 20, "a" * 5000,
                     "sgd", "wrn", "asha", "cosine", "digits", "max", "min", "auto"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(min_size=1, max_size=8), inner, max_size=3)),
    max_leaves=6,
)


def nested(depth: int) -> dict[str, Any]:
    value: Any = 1
    for _ in range(depth):
        value = {"k": value}
    return value


@st.composite
def mutated_study(draw) -> dict[str, Any]:
    """A shipped study file with one to three edits."""
    document = json.loads(json.dumps(draw(st.sampled_from(BASES))))
    for _ in range(draw(st.integers(1, 3))):
        sections = [k for k, v in document.items() if isinstance(v, dict)]
        edit = draw(st.sampled_from(["value", "value", "delete", "unknown", "empty", "nest",
                                     "section"]))
        section = draw(st.sampled_from(sections)) if sections else None
        keys = sorted(document[section]) if section else []
        if edit == "section" or section is None:
            document[draw(st.sampled_from(["study", "data", "train", "space", "model", "x", "é"]))] = \
                draw(st.one_of(VALUES, st.just({})))
        elif edit == "value" and keys:
            document[section][draw(st.sampled_from(keys))] = draw(VALUES)
        elif edit == "delete" and keys:
            del document[section][draw(st.sampled_from(keys))]
        elif edit == "unknown":
            document[section][draw(st.text(min_size=1, max_size=12))] = draw(VALUES)
        elif edit == "empty":
            document[section] = {}
        elif edit == "nest" and keys:
            document[section][draw(st.sampled_from(keys))] = nested(draw(st.integers(2, 60)))
    return document


def check_case(tmp_path: Path, text: str) -> None:
    path = tmp_path / "study.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    code, _, stderr = cli_in_process(["check", str(path)])
    assert_accepted_or_refused(code, stderr, text[:2000])


# ---------------------------------------------------------------- the cases

def test_the_shipped_study_files_are_checked_as_they_are(tmp_path):
    """The fuzz starts from files `check` takes (own-images may name a folder not here)."""
    for path in SHIPPED:
        code, _, stderr = cli_in_process(["check", str(path)])
        assert_accepted_or_refused(code, stderr, path.name)
        assert code == 0 or path.name == "own-images.toml", stderr


@FUZZ
@given(document=mutated_study())
def test_mutated_study_files_are_accepted_or_refused_in_one_line(document, tmp_path_factory):
    check_case(tmp_path_factory.mktemp("case"), toml_document(document))


@FUZZ
@given(base=st.sampled_from(SHIPPED), at=st.floats(0, 1), junk=st.text(min_size=1, max_size=12),
       cut=st.booleans())
def test_raw_edits_of_the_toml_text_are_accepted_or_refused(base, at, junk, cut, tmp_path_factory):
    text = base.read_text()
    position = int(at * len(text))
    text = text[:position] + junk + ("" if cut else text[position:])
    check_case(tmp_path_factory.mktemp("case"), text)


COMMANDS = ["check", "train", "evaluate", "status", "best", "report", "studies", "models",
            "predict", "run", "resume", "ui", "serve"]
FLAGS = ["--epochs", "--lr", "--batch-size", "--dataset", "--model", "--optimizer", "--depth",
         "--out", "--port", "--host", "--workers", "--export", "--json", "--pareto", "--seed",
         "--device", "--split", "--checkpoint", "--name", "--address", "--tracking-uri", "-x", "--"]


@FUZZ
@given(command=st.sampled_from(COMMANDS),
       words=st.lists(st.one_of(st.sampled_from(FLAGS), SCALARS.map(str)), max_size=6))
@example(command="check", words=["0", "\n"])  # CI's find: argparse quoted the newline as it was
def test_fuzzed_command_lines_are_parsed_or_refused_in_one_line(command, words):
    """Parsing only: a command line that parses is not run (`run` would start a study)."""
    from search.cli.main import build_parser

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            build_parser().parse_args([command, *words])
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 2
    assert_accepted_or_refused(code, err.getvalue(), repr([command, *words]))


@pytest.fixture(scope="module")
def checkpoint_state() -> dict[str, Any]:
    """A real checkpoint's state of an untrained resnet-8 on digits."""
    from resnet_core import DataConfig, TrainConfig, TrainingRun, parse_model_name

    run = TrainingRun.from_configs(parse_model_name("resnet-8"), TrainConfig(epochs=1),
                                   DataConfig("digits"), "cpu")
    return run.state_dict()


@st.composite
def mutated_checkpoint(draw, state: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint whose configs or weights were edited: what another version or a hand
    edit leaves behind."""
    import torch

    state = dict(state)
    section = draw(st.sampled_from(["model_config", "data_config", "model", "top", "train_config"]))
    if section == "model":
        weights = dict(state["model"])
        name = draw(st.sampled_from(sorted(weights)))
        weights[name] = draw(st.sampled_from([torch.zeros(3), torch.zeros(0), torch.ones(2, 2, 2)]))
        if draw(st.booleans()):
            del weights[name]
        state["model"] = weights
    elif section == "top":
        key = draw(st.sampled_from(sorted(state)))
        state[key] = draw(SCALARS)
    elif isinstance(state.get(section), dict) and state[section]:
        edited = dict(state[section])
        edited[draw(st.sampled_from(sorted(edited)))] = draw(SCALARS)
        state[section] = edited
    return state


def test_fuzzed_checkpoint_files_are_evaluated_or_refused_in_one_line(checkpoint_state, tmp_path):
    """`evaluate --checkpoint` on edited configs, wrong weights and flipped bytes."""
    import random

    import torch

    from resnet_core import save_checkpoint

    path = save_checkpoint(checkpoint_state, tmp_path / "good.pt")
    good = path.read_bytes()
    cases: list[tuple[str, bytes | dict[str, Any]]] = []
    rng = random.Random(0)
    for i in range(40):  # flipped bytes anywhere: the header, the records, the zip directory
        data = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        cases.append((f"flipped bytes {i}", bytes(data)))

    @settings(max_examples=120, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(state=mutated_checkpoint(checkpoint_state))
    def collect(state):
        cases.append(("edited state", state))

    collect()
    target = tmp_path / "case.pt"
    for what, content in cases:
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            torch.save(content, target)
        code, _, stderr = cli_in_process(["evaluate", "--checkpoint", str(target), "--split", "val"])
        assert_accepted_or_refused(code, stderr, what if isinstance(content, bytes) else
                                   f"{what}: {_describe(content, checkpoint_state)}")


def _describe(state: dict[str, Any], original: dict[str, Any]) -> str:
    """The keys of a checkpoint state that differ from the original's."""
    return ", ".join(f"{k}: {state.get(k)!r}"[:200] for k in sorted(set(state) | set(original))
                     if k != "model" and state.get(k) != original.get(k)) or "the weights"
