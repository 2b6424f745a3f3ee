"""bench/page.py run small: the views answer and paginate as they should (never its timings)."""

from __future__ import annotations

from pathlib import Path

from tests.test_bench_smoke import run_bench


def test_page_benchmark_runs_and_paginates(tmp_path: Path) -> None:
    data, printed = run_bench("page", tmp_path, "--endpoints", "450", "--repeat", "1")
    figures = data["figures"]
    assert figures["endpoints"] == 450
    assert figures["/ (worst 200 first)"]["status"] == 200, printed
    assert figures["/api/v1/status"]["bytes"] > figures["/api/v1/status?state=down"]["bytes"]
