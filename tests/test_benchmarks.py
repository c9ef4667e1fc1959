"""The benchmarks' reports (their runs take an hour on Beauty; `make bench` runs them)."""

from __future__ import annotations

import pytest

from benchmarks import multimodal_beauty, retrieval_beauty


def test_both_reports_print_full_ranking_seconds_by_depth(
    capsys: pytest.CaptureFixture[str],
) -> None:
    result = {
        "test": {metric: 0.1 for metric in retrieval_beauty.REPORTED},
        "epochs_run": 3,
        "best_epoch": 2,
        "seconds_per_epoch": 1.5,
        "full_ranking_seconds": {20: 0.5, 100: 0.6, 200: 0.7},
        "users": 10,
        "items": 5,
        "peak_rss_mb": 100.0,
    }
    retrieval_beauty.print_report("demo", {"lrurec": result})
    multimodal_beauty.print_report("demo", {"mmgcn": result}, lrurec=result)
    assert capsys.readouterr().out.count("top 20: 0.50 s, top 100: 0.60 s, top 200: 0.70 s") == 2
