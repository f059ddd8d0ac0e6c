"""`make mutate` (tests/mutate.py) can only test a mutation whose text the code still holds:
when a refactor moves that text, the mutation reports "not tested" the next time someone runs
the long loop. This catches the drift in the fast suite, when the code moves."""

from __future__ import annotations

import pytest
from mutate import MUTATIONS, ROOT


@pytest.mark.parametrize("mutation", MUTATIONS, ids=[m.name for m in MUTATIONS])
def test_each_mutation_finds_its_text_exactly_once(mutation):
    source = (ROOT / mutation.path).read_text()
    assert source.count(mutation.old) == 1, (
        f"{mutation.name}: {mutation.old!r} occurs {source.count(mutation.old)} times in "
        f"{mutation.path}; point the mutation at the code as it is now")


@pytest.mark.parametrize("mutation", MUTATIONS, ids=[m.name for m in MUTATIONS])
def test_each_mutation_names_test_files_that_exist(mutation):
    files = [arg.split("::")[0] for arg in mutation.tests if arg.startswith("tests/")]
    assert files and all((ROOT / name).is_file() for name in files), mutation.tests
