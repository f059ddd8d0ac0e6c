"""This machine's Ray token (~/.ray/auth_token), made once even when several start at once.

Ray turns token authentication on for a private `ray.init()` and for `ray start --head`,
and makes the token when there is none: it checks for the file, then writes a new one. Two
studies, or two clusters, starting together on a machine without a token each wrote
theirs, and the one whose token was overwritten was refused by its own nodes
("Authentication token is missing or incorrect"). Here the check and the write happen under
one lock (`cluster/local.sh up` and `token` take the same one), and the token is readable by
its owner only (Ray's own is readable by everyone). A token given in $RAY_AUTH_TOKEN or
$RAY_AUTH_TOKEN_PATH is the user's to manage: nothing is made then.

`python -m search.study.ray_token [--describe]` makes it where missing (what local.sh runs).
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path

TOKEN_BYTES = 32  # 256 bits, as Ray's own generator


def default_token_path() -> Path:
    return Path("~/.ray/auth_token").expanduser()


def token_path(env: Mapping[str, str] = os.environ) -> Path:
    """Where Ray reads the token from when $RAY_AUTH_TOKEN does not hold it."""
    return Path(env["RAY_AUTH_TOKEN_PATH"]) if env.get("RAY_AUTH_TOKEN_PATH") else default_token_path()


def token_available(env: Mapping[str, str] = os.environ) -> bool:
    """Whether Ray would find a token: $RAY_AUTH_TOKEN, or a non-empty file at
    $RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token."""
    if env.get("RAY_AUTH_TOKEN"):
        return True
    path = token_path(env)
    return path.is_file() and path.stat().st_size > 0


def describe_token() -> str:
    """Where the token is and a fingerprint of it (never the token): `FILE sha256:0123abcd4567`."""
    import hashlib

    if os.environ.get("RAY_AUTH_TOKEN"):
        where, token = "$RAY_AUTH_TOKEN", os.environ["RAY_AUTH_TOKEN"]
    else:
        where, token = str(token_path()), token_path().read_text()
    return f"{where} sha256:{hashlib.sha256(token.strip().encode()).hexdigest()[:12]}"


def _users_to_manage() -> bool:
    return bool(os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"))


def ensure_token() -> bool:
    """Make ~/.ray/auth_token unless a token is given or there; True when this call made it."""
    import fcntl

    if _users_to_manage() or token_available():
        return False
    path = default_token_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if token_available():  # another process made it while this one waited
            return False
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_hex(TOKEN_BYTES))
        os.replace(partial, path)  # whole or not there: a reader never sees half a token
    return True


if __name__ == "__main__":  # `--describe`: then print where it is and its fingerprint
    if ensure_token():
        print(f"no Ray auth token yet: generated {default_token_path()}", file=sys.stderr)
    if "--describe" in sys.argv[1:]:
        print(describe_token())
