"""Where vitbench keeps what it derives from datasets, and how cache keys are made."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from vitbench.errors import VitbenchError


def cache_root() -> Path:
    """``$VITBENCH_CACHE``, else ``~/.cache/vitbench``; read on every call so tests can redirect it.

    A file where the folder (or one of its parents) should be is an error here: otherwise the
    first cache write fails deep inside ``datasets`` or numpy, after minutes of decoding.
    """
    root = Path(os.environ.get("VITBENCH_CACHE") or "~/.cache/vitbench").expanduser()
    for path in (root, *root.parents):
        if path.exists():
            if not path.is_dir():
                where = f"VITBENCH_CACHE={root}" if os.environ.get("VITBENCH_CACHE") else f"the cache folder {root}"
                what = "is a file" if path == root else f"is under {path}, which is a file"
                raise VitbenchError(
                    f"{where} {what}, not a folder: set VITBENCH_CACHE to a folder (it is created if missing)"
                )
            break
    return root


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
