"""``--rounds N``: the summary of N alternated rounds. Each figure is given as its median and
range over the rounds; ratios (to the round's own floor, and asyncflow against each compared
system) are taken within each round first, then summarized the same way."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .model import Figure, Floor, Run
from .report import grid, load_text, versus, versus_text
from .report import number as _num
from .stats import median

FLOOR_FIELDS = (
    ("commit_ms_p50", "commit p50", "ms"),
    ("commit_ms_p99", "commit p99", "ms"),
    ("commits_per_s_1", "commits/s, 1 conn", "/s"),
    ("commits_per_s_20", "commits/s, 20 conns", "/s"),
    ("notify_commits_per_s_20", "notifying commits/s, 20 conns", "/s"),
    ("notify_ms_p50", "NOTIFY p50", "ms"),
    ("notify_ms_p99", "NOTIFY p99", "ms"),
    ("commit_cpu_us", "asyncpg CPU per commit", "µs"),
)


def spread(values: Sequence[float]) -> dict[str, float] | None:
    """Median, least and greatest of ``values`` (None when there are none)."""
    if not values:
        return None
    return {"median": median(values), "min": min(values), "max": max(values),
            "n": float(len(values))}


def spread_text(summary: dict[str, float] | None, unit: str = "",
                fmt: Callable[[float], str] = _num) -> str:
    if summary is None:
        return ""
    suffix = f" {unit}" if unit else ""
    text = f"{fmt(summary['median'])}{suffix} [{fmt(summary['min'])}-{fmt(summary['max'])}]"
    if summary["n"] < 2:
        text = f"{fmt(summary['median'])}{suffix}"
    return text


def _figures(run: Run, name: str, system: str | None) -> dict[str, Figure]:
    if system is None:
        result = run.results.get(name)
    else:
        result = next((c.results.get(name) for c in run.comparisons if c.system == system), None)
    if result is None or result.error is not None:
        return {}
    return {figure.key: figure for figure in result.figures}


def summarize(runs: Sequence[Run]) -> dict[str, Any]:
    """Every figure's spread over the rounds, for the JSON file and the table."""
    floors = [run.floor for run in runs if run.floor is not None]
    systems = [c.system for c in runs[0].comparisons if c.version is not None] if runs else []
    scenarios: dict[str, dict[str, Any]] = {}
    for name in runs[0].results if runs else []:
        keys: dict[str, Figure] = {}
        for run in runs:
            for key, figure in _figures(run, name, None).items():
                keys.setdefault(key, figure)
        rows: dict[str, Any] = {}
        for key, sample in keys.items():
            ours = [f[key] for f in (_figures(run, name, None) for run in runs) if key in f]
            ratios = [r for run in runs if (f := _figures(run, name, None).get(key)) is not None
                      and (r := f.ratio(run.floor)) is not None]
            row: dict[str, Any] = {
                "label": sample.label, "unit": sample.unit,
                "floor_reference": sample.floor_label() or None,
                "asyncflow": spread([f.value for f in ours]),
                "ratio_to_floor": spread(ratios),
            }
            for system in systems:
                theirs, factors, unit = [], [], sample.unit
                for run in runs:
                    mine = _figures(run, name, None).get(key)
                    other = _figures(run, name, system).get(key)
                    if other is None:
                        continue
                    theirs.append(other.value)
                    unit = other.unit
                    if mine is not None and (factor := versus(mine, other)) is not None:
                        factors.append(factor)
                row[system] = spread(theirs)
                row[f"{system} unit"] = unit
                row[f"vs {system}"] = spread(factors)
            rows[key] = row
        scenarios[name] = rows
    return {
        "rounds": len(runs),
        "floor": {key: spread([floor.value(key) for floor in floors])
                  for key, _label, _unit in FLOOR_FIELDS},
        "load_average_1min": spread([load[0] for run in runs
                                     for load in (run.load_start, run.load_end)
                                     if load is not None]),
        "systems": systems,
        "scenarios": scenarios,
    }


def _floor_line(summary: dict[str, Any]) -> str:
    parts = []
    for key, label, unit in FLOOR_FIELDS:
        value = summary["floor"].get(key)
        if value is not None:
            parts.append(f"{label} {spread_text(value, unit)}")
    return "floor, median [range] over the rounds: " + "; ".join(parts)


def render_rounds(runs: Sequence[Run], summary: dict[str, Any]) -> str:
    """The table of medians and ranges, with each round's floor and load average."""
    first = runs[0]
    pg, machine = first.postgres, first.machine
    quick = " (--quick: small sizes, figures not meaningful)" if first.quick else ""
    lines = [
        f"asyncflow benchmarks, {len(runs)} alternated rounds{quick}: median [min-max]",
        f"PostgreSQL {pg.get('server_version')} "
        f"({'embedded' if pg.get('embedded') else 'ASYNCFLOW_DATABASE_URL'}, "
        f"{pg.get('transport')}); {machine.get('cpus')} CPUs {machine.get('cpu')}; "
        f"Python {machine.get('python')} on {machine.get('event_loop', 'asyncio')}; "
        f"asyncflow {machine.get('asyncflow_revision')}",
        _floor_line(summary),
    ]
    for run in runs:
        floor: Floor | None = run.floor
        where = "asyncflow first" if (run.round or 1) % 2 == 1 else "compared systems first"
        commit = "n/a" if floor is None else f"{floor.commit_ms_p50:.3f} ms"
        lines.append(f"  round {run.round} ({where}): commit p50 {commit}; {load_text(run)}")
    for comparison in first.comparisons:
        if comparison.version is not None:
            lines.append(f"compared with {comparison.system} {comparison.version}")
        elif comparison.reason:
            lines.append(f"{comparison.system}: {comparison.reason}")
    systems: list[str] = summary["systems"]
    head = ["scenario", "figure", "asyncflow", "ratio to floor"]
    for system in systems:
        head += [system, f"asyncflow vs {system}"]
    rows = [head]
    for name, figures in summary["scenarios"].items():
        for row in figures.values():
            cells = [name, row["label"], spread_text(row["asyncflow"], row["unit"]),
                     _ratio_text(row)]
            for system in systems:
                cells += [spread_text(row[system], row[f"{system} unit"]),
                          _versus_text(row[f"vs {system}"])]
            rows.append(cells)
    errors = [f"round {run.round}: {name}: {result.error}" for run in runs
              for name, result in run.results.items() if result.error is not None]
    errors += [f"round {run.round}: {c.system} {name}: {result.error}" for run in runs
               for c in run.comparisons for name, result in c.results.items()
               if result.error is not None]
    lines += ["", grid(rows)]
    if systems:
        lines += ["", "asyncflow vs X: how many times better asyncflow's figure is, paired within "
                  "each round (a range below 1.0 means worse)"]
    if errors:
        lines += ["", "errors:", *errors]
    return "\n".join(lines)


def _ratio_text(row: dict[str, Any]) -> str:
    ratio = row["ratio_to_floor"]
    if ratio is None:
        return ""
    return f"{spread_text(ratio, fmt=lambda v: f'{v:.2f}x')} {row['floor_reference']}"


def _versus_text(factor: dict[str, float] | None) -> str:
    if factor is None:
        return ""
    if factor["n"] < 2:
        return versus_text(factor["median"])
    return f"{versus_text(factor['median'])} [{factor['min']:.1f}-{factor['max']:.1f}x]"
