"""Where vitbench keeps what it derives from datasets, and how cache keys are made."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any


def cache_root() -> Path:
    """``$VITBENCH_CACHE``, else ``~/.cache/vitbench``; read on every call so tests can redirect it."""
    return Path(os.environ.get("VITBENCH_CACHE") or "~/.cache/vitbench").expanduser()


def files_signature(dataset: Any) -> list | None:
    """Name, size and mtime of a ``datasets.Dataset``'s Arrow files, or None when it lives only in memory.

    An in-memory dataset has nothing stable to key a disk cache on, so callers skip caching it.
    """
    files = [f["filename"] for f in getattr(dataset, "cache_files", None) or []]
    if not files:
        return None
    sig = []
    for name in sorted(files):
        st = os.stat(name)
        sig.append([name, st.st_size, st.st_mtime_ns])
    return sig


def cache_key(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def progress(message: str) -> None:
    """One-off progress notes go to stderr so ``--json`` output on stdout stays parseable."""
    print(f"vitbench: {message}", file=sys.stderr, flush=True)
