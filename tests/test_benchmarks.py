"""The benchmark suite still runs: ``python -m benchmarks --quick`` against the test server.

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

from benchmarks.scenarios import SCENARIOS

pytestmark = pytest.mark.slow  # the whole benchmark suite, quick mode

ROOT = Path(__file__).resolve().parent.parent


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
