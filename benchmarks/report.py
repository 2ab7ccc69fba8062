"""The printed table and the JSON results file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import RESULTS_FORMAT
from .model import Figure, Floor, Run, ScenarioResult
from .targets import TARGETS, check, targets_of

HIGHER_IS_BETTER = {"wf/s", "values/s", "jobs/s"}


def number(value: float) -> str:
    if float(value).is_integer() and value < 1000:  # a count
        return f"{value:.0f}"
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _value(figure: Figure) -> str:
    return f"{number(figure.value)} {figure.unit}"


def _ratio(figure: Figure, floor: Floor | None) -> str:
    ratio = figure.ratio(floor)
    if ratio is None:
        return ""
    return f"{ratio:.2f}x {figure.floor_label()}"


def versus(ours: Figure, theirs: Figure | None) -> float | None:
    """How many times better asyncflow's figure is than the other system's (< 1: worse)."""
    if theirs is None or ours.value <= 0 or theirs.value <= 0:
        return None
    if ours.unit in HIGHER_IS_BETTER:
        return ours.value / theirs.value
    return theirs.value / ours.value


def versus_text(factor: float | None) -> str:
    if factor is None:
        return ""
    return f"{factor:.1f}x better" if factor >= 1 else f"{1 / factor:.1f}x worse"


def _target(scenario: str, figure: Figure, run: Run) -> tuple[str, str]:
    target = targets_of(scenario, figure.key)
    if target is None:
        return "", ""
    verdict = check(target, run.results.get(scenario), run.floor)
    text = target.text
    if verdict.limit is not None and "floor" in text:
        text += f" ({number(verdict.limit)} {figure.unit})"
    return text, verdict.status


def grid(rows: list[list[str]]) -> str:
    widths = [max(len(row[col]) for row in rows) for col in range(len(rows[0]))]
    lines = []
    for index, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
                     .rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def load_text(run: Run) -> str:
    def one(load: tuple[float, float, float] | None) -> str:
        return "n/a" if load is None else " / ".join(f"{value:.2f}" for value in load)

    return f"load average (1 / 5 / 15 min): {one(run.load_start)} at the start, " \
        f"{one(run.load_end)} at the end"


def header(run: Run) -> list[str]:
    pg = run.postgres
    where = "embedded" if pg.get("embedded") else "ASYNCFLOW_DATABASE_URL"
    machine = run.machine
    quick = " (--quick: small sizes, targets not meaningful)" if run.quick else ""
    lines = [
        f"asyncflow benchmarks{quick}",
        f"PostgreSQL {pg.get('server_version')} ({where}, {pg.get('transport')}); "
        f"{machine.get('cpus')} CPUs {machine.get('cpu')}; Python {machine.get('python')} "
        f"on {machine.get('event_loop', 'asyncio')}",
    ]
    floor = run.floor
    if floor is not None:
        lines.append(
            f"floor (asyncpg): commit p50 {floor.commit_ms_p50:.3f} ms, p99 "
            f"{floor.commit_ms_p99:.3f} ms; {floor.commits_per_s_1:,.0f} commits/s on 1 "
            f"connection, {floor.commits_per_s_20:,.0f} on 20 "
            f"({floor.notify_commits_per_s_20:,.0f} with a NOTIFY); NOTIFY round trip p50 "
            f"{floor.notify_ms_p50:.3f} ms, p99 {floor.notify_ms_p99:.3f} ms; "
            f"{floor.commit_cpu_us:.0f} µs of CPU per commit"
        )
    else:
        lines.append(f"floor: not measured ({run.floor_error})")
    lines.append(load_text(run))
    for comparison in run.comparisons:
        if comparison.version is not None:
            lines.append(f"compared with {comparison.system} {comparison.version}")
    return lines


def render(run: Run) -> str:
    """The results table (and two columns per compared system)."""
    comparisons = run.comparisons
    head = ["scenario", "figure", "asyncflow", "ratio to floor", "target", ""]
    for comparison in comparisons:
        head += [comparison.system, f"asyncflow vs {comparison.system}"]
    rows = [head]
    errors: list[str] = []
    for name, result in run.results.items():
        if result.error is not None:
            rows.append([name, "error (see below)", "", "", "", ""] + ["", ""] * len(comparisons))
            errors.append(f"{name}: {result.error}")
            continue
        for figure in result.figures:
            target, status = _target(name, figure, run)
            row = [name, figure.label, _value(figure), _ratio(figure, run.floor), target, status]
            for comparison in comparisons:
                row += _comparison_cells(figure, comparison.results.get(name))
            rows.append(row)
    lines = [*header(run), "", grid(rows)]
    if errors:
        lines += ["", "errors:", *errors]
    for comparison in comparisons:
        if comparison.reason:
            lines += ["", f"{comparison.system}: {comparison.reason}"]
        failed = [f"{comparison.system} {name}: {result.error}"
                  for name, result in comparison.results.items() if result.error is not None]
        if failed:
            lines += ["", *failed]
    return "\n".join(lines)


def _comparison_cells(figure: Figure, theirs: ScenarioResult | None) -> list[str]:
    if theirs is None:
        return ["", ""]
    if theirs.error is not None:
        return ["n/a", theirs.error.splitlines()[0][:50]]
    other = theirs.figure(figure.key)
    if other is None:
        return ["", ""]
    return [_value(other), versus_text(versus(figure, other))]


def summary(run: Run) -> str:
    """One line per target: met or missed, and by how much."""
    lines = []
    for target in TARGETS:
        if target.scenario not in run.results:
            continue
        verdict = check(target, run.results[target.scenario], run.floor)
        if verdict.value is None or verdict.limit is None:
            lines.append(f"  n/a   {target.scenario}.{target.key}")
            continue
        margin = verdict.value / verdict.limit if verdict.limit else float("inf")
        lines.append(f"  {verdict.status:<5} {target.scenario}.{target.key} = "
                     f"{number(verdict.value)} (target {target.text}; {margin:.2f}x the limit)")
    return "\n".join(["targets:", *lines]) if lines else ""


def to_json(run: Run) -> dict[str, Any]:
    floor = run.floor
    verdicts = [check(target, run.results[target.scenario], floor).to_dict()
                for target in TARGETS if target.scenario in run.results]
    return {
        "format": RESULTS_FORMAT,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "argv": run.argv,
        "quick": run.quick,
        "machine": run.machine,
        "postgres": run.postgres,
        "floor": None if floor is None else floor.to_dict(),
        "floor_error": run.floor_error,
        "scenarios": {name: result.to_dict(floor) for name, result in run.results.items()},
        "targets": verdicts,
        "load_average_start": run.load_start,
        "load_average_end": run.load_end,
        "round": run.round,
        "comparisons": [comparison.to_dict(floor) for comparison in run.comparisons],
    }


def write_json(data: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
