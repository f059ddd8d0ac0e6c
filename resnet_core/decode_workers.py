"""Decoding a folder's images in worker processes that write straight into the cache's array.

Pillow holds the GIL while it parses and decodes a small JPEG, so decode threads use one
core however many there are (benchmarks/RESULTS.md, "Image folder: decode cache").
Processes use them all. The workers are fresh interpreters (`python -m
resnet_core.decode_workers`), not multiprocessing's: a fork beside torch's and Ray's
threads can deadlock on a lock one of them held, and multiprocessing's spawn and forkserver
re-import the user's main script, which runs it again where it lacks an
`if __name__ == "__main__"` guard. A worker imports Pillow, simplejpeg and numpy, and
writes each chunk of files it is handed, as consecutive rows, into the cache's .npy file
with one write at the rows' offset; the parent hands out the next chunk as each worker
finishes one, so a worker slowed by other load does less of the work.

Protocol, one line each way per chunk: the parent writes the job (JSON: root, files,
shape, array path, the offset of its data) as the first line, then "START END" lines; the
worker answers each with the JSON list of the chunk's failures, [[file, reason], ...],
once the rows are written. End of input: the worker exits.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

Failures = list[tuple[str, str]]
PACKAGE_PARENT = str(Path(__file__).resolve().parents[1])


def decode_in_processes(root: Path, files: list[str], shape: tuple[int, int, int],
                        array_path: str, offset: int, workers: int, chunk: int,
                        on_chunk: Callable[[int, int, Failures], None]) -> None:
    """Decode `files` (relative to `root`) into the rows of the uint8 (N, C, H, W) .npy at
    `array_path` (its data from byte `offset` on), in `workers` processes; `on_chunk(start,
    end, failures)` is called in this thread as each chunk is written. Raises OSError when a
    worker cannot start or dies."""
    todo: queue.SimpleQueue[tuple[int, int]] = queue.SimpleQueue()
    for start in range(0, len(files), chunk):
        todo.put((start, min(start + chunk, len(files))))
    done: queue.SimpleQueue[tuple[int, int, Failures] | BaseException] = queue.SimpleQueue()
    job = json.dumps({"root": str(root), "files": files, "shape": list(shape),
                      "array": array_path, "offset": offset})
    children: list[subprocess.Popen] = []
    feeders: list[threading.Thread] = []
    try:
        for _ in range(workers):
            children.append(_start_worker())
            feeders.append(threading.Thread(target=_feed, args=(children[-1], job, todo, done),
                                            daemon=True))
            feeders[-1].start()
        for _ in range((len(files) + chunk - 1) // chunk):
            result = done.get()
            if isinstance(result, BaseException):
                raise result
            on_chunk(*result)
    finally:
        for _ in _drain(todo):  # after an error, no chunk is left: each worker ends at its next read
            pass
        for feeder in feeders:
            feeder.join()
        for child in children:
            if child.stdin and not child.stdin.closed:
                child.stdin.close()
            child.wait()


def _start_worker() -> subprocess.Popen:
    env = dict(os.environ)
    # The worker imports this package from where the parent found it, installed or not.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (PACKAGE_PARENT, env.get("PYTHONPATH")) if p)
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.Popen([sys.executable, "-m", "resnet_core.decode_workers"], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)


def _feed(child: subprocess.Popen, job: str, todo: queue.SimpleQueue,
          done: queue.SimpleQueue) -> None:
    """Hand `child` chunks until none are left; its answers go to `done`."""
    try:
        child.stdin.write(job + "\n")
        for start, end in _drain(todo):
            child.stdin.write(f"{start} {end}\n")
            child.stdin.flush()
            answer = child.stdout.readline()
            if not answer:
                raise OSError(f"an image decode worker (pid {child.pid}) exited with "
                              f"{child.wait()} while decoding files {start}-{end - 1}")
            done.put((start, end, [tuple(failure) for failure in json.loads(answer)]))
    except BaseException as error:  # noqa: BLE001 (handed to the parent thread, raised there)
        done.put(error if isinstance(error, OSError) else OSError(str(error)))
    finally:
        try:
            child.stdin.close()
        except OSError:
            pass  # the worker is gone already; its exit status says why


def _drain(todo: queue.SimpleQueue) -> Iterator[tuple[int, int]]:
    while True:
        try:
            yield todo.get_nowait()
        except queue.Empty:
            return


def _work() -> None:
    """The worker's side: decode each chunk it is handed into its rows of the array file."""
    import numpy as np

    from resnet_core.image_pixels import decode_errors, decode_failure, prepared_pixels

    job = json.loads(sys.stdin.readline())
    root, files = job["root"], job["files"]
    channels, height, width = job["shape"]
    row_bytes = channels * height * width
    errors = decode_errors()
    array = os.open(job["array"], os.O_WRONLY)
    try:
        for line in sys.stdin:
            start, end = map(int, line.split())
            rows, failed = bytearray(), []
            for row in range(start, end):
                try:
                    rows += prepared_pixels(os.path.join(root, files[row]), height, width,
                                            channels)
                except errors as error:
                    rows += bytes(row_bytes)  # an unreadable file's row stays zeros
                    failed.append((files[row], decode_failure(error)))
            # (rows, height, width, channels) -> the cache's (rows, channels, height, width):
            # one transposing copy for the chunk, not a slice per channel per image.
            planes = np.frombuffer(rows, np.uint8).reshape(end - start, height, width, channels)
            os.pwrite(array, planes.transpose(0, 3, 1, 2).tobytes(),
                      job["offset"] + start * row_bytes)
            sys.stdout.write(json.dumps(failed) + "\n")
            sys.stdout.flush()
    finally:
        os.close(array)


if __name__ == "__main__":
    _work()
