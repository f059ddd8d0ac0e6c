"""Bad input from the user: one line on stderr and exit code 2, before anything starts."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from search.studyfile.config import ConfigError

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad input from the user: reported as one line with exit code 2."""


@contextlib.contextmanager
def user_input() -> Iterator[None]:
    """Validation errors of configs built from arguments are the user's: exit code 2."""
    try:
        yield
    except ValueError as error:
        raise ConfigError(str(error)) from None
