"""A key's use, read from the audit trail (hsmkms.audit.query: the one reader): calls per
day by operation, the principals that called and when last, and recent failures. The
chart is plain SVG geometry computed here, drawn by the template with presentation
attributes only (the console's Content-Security-Policy allows no inline style).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from hsmkms.audit.query import Query, query, record_keys, record_principal, record_time
from hsmkms.console.calls import USER_AGENT

FAILURES_SHOWN = 20
# Colour-blind-safe (Okabe-Ito), with a grey for the operations past the palette.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442")
OTHER_COLOUR = "#999999"
CHART_WIDTH, CHART_HEIGHT, AXIS = 720, 200, 40


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    colour: str
    label: str  # what a screen reader and the tooltip say


@dataclass
class PrincipalUse:
    principal: str
    calls: int = 0
    failures: int = 0
    last_use: datetime | None = None


@dataclass
class Usage:
    since: datetime
    until: datetime
    days: list[date]
    counts: Counter[tuple[date, str]] = field(default_factory=Counter)
    principals: dict[str, PrincipalUse] = field(default_factory=dict)
    failures: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=FAILURES_SHOWN))
    failed: Counter[str] = field(default_factory=Counter)  # failures by operation
    total: int = 0
    console_reads: int = 0  # the console's own page reads: not usage, not charted

    def add(self, record: dict[str, Any]) -> None:
        stamp = record_time(record)
        if stamp is None:
            return
        if record.get("userAgent") == USER_AGENT and record.get("readOnly"):
            self.console_reads += 1
            return
        operation = str(record.get("eventName"))
        day = stamp.astimezone(UTC).date()
        self.counts[(day, operation)] += 1
        self.total += 1
        who = record_principal(record) or "(unauthenticated)"
        use = self.principals.setdefault(who, PrincipalUse(who))
        use.calls += 1
        if use.last_use is None or stamp > use.last_use:
            use.last_use = stamp
        if record.get("errorCode"):
            use.failures += 1
            self.failed[operation] += 1
            self.failures.append(record)

    def operations(self) -> list[str]:
        """Operations by number of calls, most first."""
        totals: Counter[str] = Counter()
        for (_, operation), n in self.counts.items():
            totals[operation] += n
        return [operation for operation, _ in totals.most_common()]

    def colours(self) -> dict[str, str]:
        return {
            operation: PALETTE[i] if i < len(PALETTE) else OTHER_COLOUR
            for i, operation in enumerate(self.operations())
        }

    def by_principal(self) -> list[PrincipalUse]:
        return sorted(self.principals.values(), key=lambda u: (-u.calls, u.principal))

    def recent_failures(self) -> list[dict[str, Any]]:
        return list(reversed(self.failures))

    def bars(self) -> list[Bar]:
        """Stacked bars, one per day, one segment per operation."""
        colours = self.colours()
        order = self.operations()
        peak = max((sum(self.counts[(d, o)] for o in order) for d in self.days), default=0)
        slot = (CHART_WIDTH - AXIS) / max(1, len(self.days))
        bars = []
        for i, day in enumerate(self.days):
            bottom = float(CHART_HEIGHT)
            for operation in order:
                n = self.counts.get((day, operation), 0)
                if not n:
                    continue
                height = (CHART_HEIGHT - 10) * n / peak
                bottom -= height
                label = f"{day.isoformat()}: {operation} x {n}"
                x = AXIS + i * slot + 1
                bars.append(Bar(x, bottom, max(1.0, slot - 2), height, colours[operation], label))
        return bars

    def peak(self) -> int:
        return max((sum(n for (d, _), n in self.counts.items() if d == day) for day in self.days),
                   default=0)  # fmt: skip

    def table(self) -> list[tuple[date, dict[str, int]]]:
        """Per day, per operation: the chart's numbers as a table (screen readers, print)."""
        return [
            (day, {o: self.counts[(day, o)] for o in self.operations() if self.counts[(day, o)]})
            for day in self.days
            if any(self.counts[(day, o)] for o in self.operations())
        ]


def _days(since: datetime, until: datetime) -> list[date]:
    first, last = since.astimezone(UTC).date(), (until - timedelta(microseconds=1)).date()
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def key_usage(directory: Path, key_id: str, since: datetime, until: datetime) -> Usage:
    """Every record naming the key in [since, until)."""
    usage = Usage(since, until, _days(since, until))
    for record in query(directory, Query(key=key_id, since=since, until=until)):
        usage.add(record)
    return usage


def usage_by_key(
    directory: Path, key_ids: Iterable[str], since: datetime, until: datetime
) -> dict[str, Usage]:
    """One pass over the period's records, split by the keys each names."""
    wanted = set(key_ids)
    found = {key: Usage(since, until, []) for key in wanted}
    for record in query(directory, Query(since=since, until=until)):
        for key in record_keys(record) & wanted:
            found[key].add(record)
    return found
