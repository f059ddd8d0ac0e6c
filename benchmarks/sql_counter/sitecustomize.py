"""Counts the SQL statements a process sends (benchmarks/scale_real_study.py puts this folder on
the driver's PYTHONPATH): every SQLAlchemy engine's statements by verb, written every second
to $RESNET_SEARCH_SQL_COUNTS as JSON, so the benchmark reads the MLflow writes per trial from
outside the driver without a line of it changed."""

import os

_PATH = os.environ.get("RESNET_SEARCH_SQL_COUNTS")

if _PATH:
    import collections
    import json
    import threading

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    _counts: collections.Counter = collections.Counter()

    @event.listens_for(Engine, "before_cursor_execute")
    def _count(conn, cursor, statement, parameters, context, executemany):  # noqa: ARG001
        verb = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "?"
        _counts[verb] += 1
        _counts["statements"] += 1
        if executemany and parameters:  # one statement, many rows (MLflow's log_batch)
            _counts["rows_of_executemany"] += len(parameters)

    @event.listens_for(Engine, "commit")
    def _commit(conn):  # noqa: ARG001
        _counts["COMMIT"] += 1

    def _dump() -> None:
        while True:
            snapshot = dict(_counts)
            temporary = f"{_PATH}.tmp"
            with open(temporary, "w") as out:
                json.dump(snapshot, out)
            os.replace(temporary, _PATH)
            threading.Event().wait(1.0)

    threading.Thread(target=_dump, name="sql-counter", daemon=True).start()
