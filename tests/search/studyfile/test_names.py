"""Names that cannot escape: a study name, a registered model name or an output folder
that would leave its folder (`..`, `/`), end a C string (NUL) or mean something to a shell
is refused with one line before anything starts."""

from __future__ import annotations

import pytest
from common import toml_value
from study_helpers import cli_in_process

STUDY = """[study]
name = {name}
num_samples = 1
[data]
dataset = "digits"
[train]
epochs = 1
[space]
family = ["resnet"]
depth = [8]
{tracking}"""

BAD_NAMES = ["..", ".", "../escape", "a/../../b", "a\\b", "nul\x00byte", "tab\tname", "a;rm -rf ~",
             "$(whoami)", "`id`", "a|b", "a&b", "a>b", "quote'name", "-flag", "a" * 201,
             "line\nbreak"]


def check(tmp_path, name: str, *, registered: str | None = None, flag: str | None = None
          ) -> tuple[int, str]:
    tracking = f"[tracking]\nregistered_model = {toml_value(registered)}\n" if registered else ""
    path = tmp_path / "study.toml"
    path.write_text(STUDY.format(name=toml_value(name), tracking=tracking))
    # `run --name` (check has no --name): refused before anything starts, as the test asserts
    command = ["run", str(path), "--name", flag] if flag is not None else ["check", str(path)]
    code, _, stderr = cli_in_process(command)
    return code, stderr


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_a_study_name_that_could_escape_is_refused_in_one_line(tmp_path, monkeypatch, name):
    monkeypatch.setenv("RESNET_SEARCH_HOME", str(tmp_path / "home"))
    code, stderr = check(tmp_path, name)
    assert code == 2, stderr
    lines = stderr.strip().split("\n")
    assert len(lines) == 1 and lines[0].startswith("resnet-search: error: ") and "name" in lines[0]
    assert not (tmp_path / "home").exists()


@pytest.mark.parametrize("name", ["../escape", "nul\x00byte", "a;b", ".."], ids=repr)
def test_the_same_names_are_refused_as_the_name_flag_and_registered_model(tmp_path, monkeypatch,
                                                                           name):
    monkeypatch.setenv("RESNET_SEARCH_HOME", str(tmp_path / "home"))
    code, stderr = check(tmp_path, "fine", flag=name)
    assert code == 2 and "--name" in stderr, stderr
    assert not (tmp_path / "home").exists()
    code, stderr = check(tmp_path, "fine", registered=name)
    assert code == 2 and "[tracking] registered_model" in stderr, stderr


@pytest.mark.parametrize("name", ["my study", "étude-2 (v2)", "wrn_16.4+aug", "研究"])
def test_ordinary_names_with_spaces_dots_and_unicode_are_accepted(tmp_path, monkeypatch, name):
    monkeypatch.setenv("RESNET_SEARCH_HOME", str(tmp_path / "home"))
    code, stderr = check(tmp_path, name, registered=name)
    assert code == 0, stderr


def test_an_output_folder_with_a_nul_is_refused_before_the_store_is_read(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNET_SEARCH_HOME", str(tmp_path / "home"))
    code, _, stderr = cli_in_process(["report", "some-study", "--out", "out\x00dir"])
    assert code == 2
    assert stderr.count("\n") == 1 and "--out" in stderr, stderr
    assert not (tmp_path / "home").exists()
