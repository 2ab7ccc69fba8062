"""The data a run produces: the floor, figures, scenario results, and a scenario's context."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .stats import percentile, to_ms


@dataclass(frozen=True, slots=True)
class Floor:
    """What the server does for plain asyncpg: the reference every figure is divided by."""

    commit_ms_p50: float
    commit_ms_p99: float
    commits_per_s_1: float
    commits_per_s_20: float
    notify_commits_per_s_20: float
    notify_ms_p50: float
    notify_ms_p99: float
    #: The runner process's CPU time per commit of the commit-latency loop (µs): what one
    #: autocommit statement costs plain asyncpg here, the unit of the CPU-per-operation figures.
    #: 0: not measured (a results file from before it existed).
    commit_cpu_us: float = 0.0

    @property
    def s_per_commit_20(self) -> float:
        """Seconds per commit at the 20-connection rate (scaled by a count: a batch's time)."""
        return 1.0 / self.commits_per_s_20

    def value(self, key: str) -> float:
        result: float = getattr(self, key)
        return result

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


# How each floor reference reads in the table.
FLOOR_LABELS = {
    "commit_ms_p50": "commit p50",
    "commit_ms_p99": "commit p99",
    "commits_per_s_1": "commits/s, 1 conn",
    "commits_per_s_20": "commits/s, 20 conns",
    "notify_commits_per_s_20": "notifying commits/s, 20 conns",
    "notify_ms_p50": "NOTIFY p50",
    "notify_ms_p99": "NOTIFY p99",
    "commit_cpu_us": "asyncpg CPU per commit",
    "s_per_commit_20": "commits @20 conns",
}


@dataclass(frozen=True, slots=True)
class Figure:
    """One measured number. Its ratio to the floor is ``value / (floor[floor_key] * scale)``."""

    key: str
    label: str
    value: float
    unit: str
    floor_key: str | None = None
    floor_scale: float = 1.0

    def ratio(self, floor: Floor | None) -> float | None:
        if floor is None or self.floor_key is None:
            return None
        reference = floor.value(self.floor_key) * self.floor_scale
        return self.value / reference if reference > 0 else None

    def floor_label(self) -> str:
        if self.floor_key is None:
            return ""
        label = FLOOR_LABELS[self.floor_key]
        if self.floor_scale != 1.0:
            label = f"{self.floor_scale:,.0f} {label}"
        return label

    def to_dict(self, floor: Floor | None) -> dict[str, Any]:
        return {
            "label": self.label,
            "value": self.value,
            "unit": self.unit,
            "floor_key": self.floor_key,
            "floor_scale": self.floor_scale,
            "floor_reference": self.floor_label() or None,
            "ratio_to_floor": self.ratio(floor),
        }


def cpu_figure(key: str, what: str, cpu_s: float, operations: int) -> Figure:
    """The process's CPU time (``time.process_time()``: every thread, user and system) spent
    per operation, in µs; its ratio is to the CPU plain asyncpg spends per commit."""
    return Figure(key, f"CPU µs per {what}", cpu_s * 1e6 / max(operations, 1), "µs",
                  "commit_cpu_us")


def latency_figures(
    key: str, label: str, seconds: Sequence[float], floor_p50: str | None, floor_p99: str | None
) -> list[Figure]:
    """p50 and p99 figures (in ms) of latency samples given in seconds."""
    samples = to_ms(seconds)
    return [
        Figure(f"{key}_p50_ms", f"{label} p50", percentile(samples, 50), "ms", floor_p50),
        Figure(f"{key}_p99_ms", f"{label} p99", percentile(samples, 99), "ms", floor_p99),
    ]


@dataclass(slots=True)
class ScenarioResult:
    """What one scenario (of asyncflow or of DBOS) measured, or why it could not."""

    name: str
    figures: list[Figure] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None

    def figure(self, key: str) -> Figure | None:
        for figure in self.figures:
            if figure.key == key:
                return figure
        return None

    def to_dict(self, floor: Floor | None) -> dict[str, Any]:
        return {
            "params": self.params,
            "seconds": self.seconds,
            "error": self.error,
            "figures": {figure.key: figure.to_dict(floor) for figure in self.figures},
        }

    @classmethod
    def from_dict(cls, name: str, data: dict[str, Any]) -> ScenarioResult:
        """Rebuild a result sent as JSON (by the DBOS runner subprocess)."""
        figures = [
            Figure(key, item["label"], float(item["value"]), item["unit"],
                   item.get("floor_key"), float(item.get("floor_scale", 1.0)))
            for key, item in data.get("figures", {}).items()
        ]
        return cls(name, figures, data.get("params", {}), data.get("seconds", 0.0),
                   data.get("error"))


@dataclass(slots=True)
class Comparison:
    """Another system's results (DBOS, pgqueuer), or why there are none."""

    system: str
    version: str | None = None
    reason: str | None = None
    results: dict[str, ScenarioResult] = field(default_factory=dict)
    key: str | None = None  # its ``--compare`` name; None when it cannot run

    def to_dict(self, floor: Floor | None) -> dict[str, Any]:
        return {
            "system": self.system,
            "compare": self.key,
            "version": self.version,
            "reason": self.reason,
            "scenarios": {name: result.to_dict(floor) for name, result in self.results.items()},
        }


@dataclass(slots=True)
class Run:
    """Everything one invocation measured."""

    started_at: str
    argv: list[str]
    quick: bool
    machine: dict[str, Any]
    postgres: dict[str, Any]
    floor: Floor | None = None
    floor_error: str | None = None
    results: dict[str, ScenarioResult] = field(default_factory=dict)
    comparisons: list[Comparison] = field(default_factory=list)
    finished_at: str | None = None
    # os.getloadavg() (1, 5 and 15 minutes) when the run started and when it finished
    load_start: tuple[float, float, float] | None = None
    load_end: tuple[float, float, float] | None = None
    round: int | None = None  # 1-based, with --rounds
