"""A benchmark's output: percentiles, tables, verdict lines, the figures as JSON."""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchlib.machine import machine_info


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(frozen=True, slots=True)
class Spread:
    """p50 / p99 / max of a set of values, with how many there were."""

    count: int
    p50: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(len(values), percentile(values, 0.5), percentile(values, 0.99),
                   max(values) if values else 0.0)

    def ms(self) -> str:
        return f"{self.p50 * 1000:.2f} / {self.p99 * 1000:.2f} / {self.max * 1000:.2f}"

    def as_dict(self, scale: float = 1.0) -> dict[str, float]:
        return {"count": self.count, "p50": self.p50 * scale, "p99": self.p99 * scale,
                "max": self.max * scale}


@dataclass(slots=True)
class Verdict:
    goal: str
    met: bool
    detail: str

    def line(self) -> str:
        return f"{self.goal}: {'MET' if self.met else 'NOT MET'} ({self.detail})"


@dataclass(slots=True)
class Report:
    """A benchmark's output: tables, verdict lines, and the same figures as JSON."""

    title: str
    tables: list[tuple[str, list[str], list[list[str]]]] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def table(self, caption: str, headers: list[str], rows: list[list[str]]) -> None:
        self.tables.append((caption, headers, rows))

    def verdict(self, goal: str, met: bool, detail: str) -> None:
        self.verdicts.append(Verdict(goal, met, detail))

    def check(self, name: str, ok: bool) -> None:
        """A correctness fact (not a timing): the smoke tests assert these."""
        self.checks[name] = ok

    def note(self, text: str) -> None:
        self.notes.append(text)

    def render(self) -> str:
        load = os.getloadavg()
        out = [f"== {self.title} ==",
               f"({os.cpu_count()} CPUs; load average now {load[0]:.2f}, 5 min {load[1]:.2f}: "
               "other work on the machine shares the cores with the measurement)"]
        for caption, headers, rows in self.tables:
            out.append("")
            if caption:
                out.append(caption)
            widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
                      for i, h in enumerate(headers)]
            out.append("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
            out.append("  ".join("-" * w for w in widths))
            for row in rows:
                out.append("  ".join(
                    (c.ljust(w) if i == 0 else c.rjust(w))
                    for i, (c, w) in enumerate(zip(row, widths, strict=True))
                ))
        for text in self.notes:
            out.append(f"note: {text}")
        if self.checks:
            failed = [name for name, ok in self.checks.items() if not ok]
            out.append("")
            out.append("correctness: " + ("all checks passed" if not failed
                                          else "FAILED: " + ", ".join(failed)))
        out.append("")
        out.extend(v.line() for v in self.verdicts)
        return "\n".join(out) + "\n"

    def emit(self, json_path: Path | None) -> None:
        sys.stdout.write(self.render())
        sys.stdout.flush()
        if json_path is not None:
            json_path.write_text(json.dumps({
                "title": self.title,
                "figures": self.figures,
                "checks": self.checks,
                "verdicts": [{"goal": v.goal, "met": v.met, "detail": v.detail}
                             for v in self.verdicts],
                "notes": self.notes,
                "machine": machine_info(),
            }, indent=2, default=str))


def fmt(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


def mb(value: float) -> str:
    """Bytes as decimal megabytes, the unit the goals are written in."""
    return f"{value / 1e6:,.1f} MB"
