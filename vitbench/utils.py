"""Small helpers shared by every stage: atomic writes, JSON I/O, progress of long preparation."""

from __future__ import annotations

import json
import os
import secrets
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


def _new_file(folder: Path, prefix: str, suffix: str) -> str:
    """Create an empty, uniquely named file with the mode a plain ``open()`` gives (0666 & ~umask).

    Not ``tempfile.mkstemp``: its files are 0600, and after the rename results shared on a
    cluster (config.yaml, results.csv, the cache) would be readable by their owner only.
    """
    for _ in range(100):
        name = os.path.join(folder, f"{prefix}{secrets.token_hex(6)}{suffix}")
        try:
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return name
    raise FileExistsError(f"no free temporary name for {prefix}*{suffix} in {folder}")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` on success.

    Readers never see a half-written file, and a crash leaves the old file (or none).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_file(path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def first_line(e: BaseException, limit: int = 240) -> str:
    """``Type: message`` of an exception from third-party code, on one line and cut to ``limit`` characters."""
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:limit]}" if text else type(e).__name__


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


# A preparation step says nothing for its first DELAY seconds (the warm, cached path is quiet), then
# how far it is every EVERY seconds: a first run never sits for minutes without a line.
DELAY = 2.0
EVERY = 5.0


def _lead_process() -> bool:
    """Whether this process speaks for its node: the other DDP ranks prepare the same data at the same time."""
    return all(os.environ.get(var, "0") == "0" for var in ("LOCAL_RANK", "SLURM_LOCALID"))


class Progress:
    """How far a long preparation step is, as lines on stderr (a log file gets them like a terminal).

    ``with Progress("preparing fashion_mnist: decoding 60,000 images", total=60000) as p:`` and
    ``p.advance()`` per item. A clock thread prints, so a step blocked in one long call (writing an
    Arrow file, loading a checkpoint) is reported too, by its time alone. A step that ran long ends with
    a "done" line; one that failed leaves the last word to its error.
    """

    def __init__(self, what: str, total: int | None = None):
        self.what, self.total, self.done, self.stage = what, total, 0, ""
        self._start = time.monotonic()
        self._spoke = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, daemon=True, name="vitbench-progress")
        if _lead_process():
            self._thread.start()

    def advance(self, n: int = 1) -> None:
        self.done += n

    def _tick(self) -> None:
        wait = DELAY
        while not self._stop.wait(wait):
            self._say()
            wait = EVERY

    def _say(self, finished: bool = False) -> None:
        seconds = f"{time.monotonic() - self._start:.0f} s"
        if finished:
            state = f"done in {seconds}"
        elif self.stage:
            state = f"{self.stage} ({seconds})"
        elif self.total:
            state = f"{min(self.done / self.total, 1.0):.0%} ({seconds})".replace("%", " %")
        else:
            state = seconds
        print(f"vitbench: {self.what} ... {state}", file=sys.stderr, flush=True)
        self._spoke = True

    def close(self, finished: bool = True) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if finished and self._spoke:
            self._say(finished=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(finished=exc_type is None)
