"""The benchmark suite still runs: ``python -m benchmarks --quick`` against the test server, and
the other systems' side of ``--compare`` (when they are installed).

Asserts that every scenario produced numbers, never anything about speed.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.compare import SYSTEMS, run_compared, start
from benchmarks.model import Comparison, Figure, Floor, Run, ScenarioResult
from benchmarks.rounds import render_rounds, summarize
from benchmarks.scenarios import SCENARIOS
from benchmarks.server import Server

pytestmark = pytest.mark.slow  # the whole benchmark suite, quick mode

ROOT = Path(__file__).resolve().parents[2]


def test_quick_run_writes_every_scenario(server_url: str, tmp_path: Path) -> None:
    output = tmp_path / "results.json"
    env = dict(os.environ)
    env["ASYNCFLOW_DATABASE_URL"] = server_url
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--output", str(output)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "ratio to floor" in completed.stdout
    results = json.loads(output.read_text())
    assert results["quick"] is True
    assert results["postgres"]["server_version"]
    floor = results["floor"]
    assert all(isinstance(value, float) and value > 0 for value in floor.values())
    assert set(results["scenarios"]) == set(SCENARIOS)
    for name, scenario in results["scenarios"].items():
        assert scenario["error"] is None, (name, scenario["error"])
        assert scenario["figures"], name
        for key, figure in scenario["figures"].items():
            assert isinstance(figure["value"], float | int), (name, key)
            assert math.isfinite(figure["value"]) and figure["value"] >= 0, (name, key)
    assert {verdict["status"] for verdict in results["targets"]} <= {"pass", "MISS", "n/a"}


@pytest.mark.timeout(900)
@pytest.mark.parametrize("key", sorted(SYSTEMS))
async def test_compare_starts_every_scenario_of_the_other_system(
    key: str, server_url: str
) -> None:
    """``--compare dbos`` / ``--compare pgqueuer`` runs the other system's side of each
    scenario it has (small sizes) and every one of them produces figures."""
    pytest.importorskip(SYSTEMS[key].package)
    server = Server(server_url, embedded=False)
    comparison = start(key)
    assert comparison.version is not None and comparison.reason is None
    for name in SYSTEMS[key].scenarios:
        await run_compared(server, comparison, name, quick=True)
    assert set(comparison.results) == set(SYSTEMS[key].scenarios)
    for name, result in comparison.results.items():
        assert result.error is None, (key, name, result.error)
        assert result.figures, (key, name)
        for figure in result.figures:
            assert math.isfinite(figure.value) and figure.value >= 0, (key, name, figure.key)


def _run(round_number: int, commit_ms: float, ours: float, theirs: float) -> Run:
    floor = Floor(commit_ms_p50=commit_ms, commit_ms_p99=2 * commit_ms, commits_per_s_1=1000.0,
                  commits_per_s_20=5000.0, notify_commits_per_s_20=2000.0, notify_ms_p50=0.1,
                  notify_ms_p99=0.2)
    run = Run(started_at="", argv=[], quick=True, machine={}, postgres={}, floor=floor,
              load_start=(1.0, 1.0, 1.0), load_end=(2.0, 1.0, 1.0), round=round_number)
    figure = Figure("step_p50_ms", "step p50", ours, "ms", "commit_ms_p50")
    run.results["steps"] = ScenarioResult("steps", [figure])
    other = Comparison("DBOS", version="3.4.0", key="dbos")
    other.results["steps"] = ScenarioResult("steps", [Figure("step_p50_ms", "step p50", theirs,
                                                             "ms", "commit_ms_p50")])
    run.comparisons = [other]
    return run


def test_rounds_summary_gives_median_and_range_with_ratios_paired_within_each_round() -> None:
    runs = [_run(1, 0.25, 0.3, 3.0), _run(2, 0.5, 0.6, 3.0), _run(3, 0.2, 0.4, 8.0)]
    summary = summarize(runs)
    row = summary["scenarios"]["steps"]["step_p50_ms"]
    assert row["asyncflow"] == {"median": 0.4, "min": 0.3, "max": 0.6, "n": 3.0}
    # ratios to each round's own floor: 1.2, 1.2, 2.0
    assert row["ratio_to_floor"]["median"] == pytest.approx(1.2)
    assert row["ratio_to_floor"]["max"] == pytest.approx(2.0)
    # asyncflow vs DBOS within each round: 10x, 5x, 20x (not 3.0 / 0.4)
    assert row["vs DBOS"]["median"] == pytest.approx(10.0)
    assert (row["vs DBOS"]["min"], row["vs DBOS"]["max"]) == pytest.approx((5.0, 20.0))
    assert summary["floor"]["commit_ms_p50"]["median"] == pytest.approx(0.25)
    text = render_rounds(runs, summary)
    assert "3 alternated rounds" in text
    assert "round 2 (compared systems first)" in text
    assert "load average" in text
    assert "10.0x better [5.0-20.0x]" in text
