"""A run file that is not what its name says cannot exhaust memory: each reader reads at most its cap."""

from __future__ import annotations

import pytest

from vitbench import rundir
from vitbench.errors import VitbenchError


def test_metrics_jsonl_past_its_cap_reads_as_unreadable_not_into_memory(tmp_path):
    (tmp_path / rundir.METRICS).symlink_to("/dev/zero")  # stat says 0 bytes: only the bounded read stops it
    assert rundir.validation_rows(tmp_path) is None


def test_results_json_past_the_cap_is_refused_before_parsing(tmp_path, monkeypatch):
    monkeypatch.setattr(rundir, "MAX_SMALL_FILE", 2**20)
    rundir.results_path(tmp_path).write_text('{"backbone": "vit"}' + " " * 2**20)
    with pytest.raises(VitbenchError, match="results.json is larger than 1 MiB"):
        rundir.load_results(tmp_path)
