"""``vitbench.training.allocator``: a training process keeps freed memory instead of faulting it in at every step."""

from __future__ import annotations

import subprocess
import sys

import pytest

SNIPPET = """
import resource, sys
import numpy as np
from vitbench.training import allocator
if sys.argv[1] == "tuned":
    assert allocator.keep_freed_memory() and allocator.keep_freed_memory()  # once, then the same answer
for step in range(12):
    if step == 2:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    # what a CPU step does: activations of a few MiB each, all alive at once, then all freed
    blocks = [np.ones(1 << 20) for _ in range(6)]
    del blocks
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str, env: dict | None = None) -> int:
    out = subprocess.run([sys.executable, "-c", SNIPPET, mode], capture_output=True, text=True, check=True, env=env)
    return int(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_freed_blocks_are_reused_without_page_faults():
    # 10 steps of 48 MiB: ~120,000 faults when every block is mapped afresh, none once they are kept
    assert _faults("tuned") < 1000 < _faults("default")


def test_a_users_malloc_settings_win(monkeypatch):
    from vitbench.training import allocator

    monkeypatch.setattr(allocator, "_done", None)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert allocator.keep_freed_memory() is False
