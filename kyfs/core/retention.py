"""How much history a workspace keeps per key: thinning as Time Machine and snapper do it.
No I/O.

Every version of the last ``all_hours`` is kept; older ones thin out to the newest of
each hour up to ``hourly_hours``, then to the newest of each day up to ``days``; beyond
that only the newest ``versions`` are kept, whatever their age (they are also kept when
thinning would drop them; a key that no longer exists keeps none that way:
kyfs.engine.sql.history.thin_key, so its history thins out by time alone). Changes
that hold no value (delete, rename, link, symlink) are kept for ``days``, and among the
newest ``versions`` rows.

Thread-safety: values only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

HOUR_NS = 3600 * 10**9
DAY_NS = 24 * HOUR_NS
LIMITS = {  # setting -> (lowest, highest) accepted
    "versions": (0, 1_000_000),
    "all_hours": (0.0, 24.0 * 36500),
    "hourly_hours": (0.0, 24.0 * 36500),
    "days": (0.0, 36500.0),
}


@dataclass(frozen=True)
class Retention:
    """A workspace's history retention (meta ``history_versions``, ``history_all_hours``,
    ``history_hourly_hours``, ``history_days``).

    Attributes:
        versions: the newest N versions of a key are kept whatever their age.
        all_hours: every version younger than this many hours is kept.
        hourly_hours: up to this age (hours), the newest version of each hour (UTC).
        days: up to this age (days), the newest version of each day (UTC).
    """

    versions: int = 10
    all_hours: float = 1.0
    hourly_hours: float = 24.0
    days: float = 30.0

    @classmethod
    def from_meta(cls, meta: Mapping[str, str]) -> Retention:
        """The retention a workspace's settings give; a value that is unreadable or out of
        range (a foreign or old file) counts as the default, so no write ever fails on
        it."""
        values: dict[str, float] = {}
        for name, (low, high) in LIMITS.items():
            raw = meta.get(f"history_{name}")
            if raw is None:
                continue
            try:
                number = int(raw) if name == "versions" else float(raw)
            except ValueError:
                continue
            if low <= number <= high:  # also NaN
                values[name] = number
        return cls(**values)  # type: ignore[arg-type]

    def to_drop(self, rows: Iterable[tuple[int, int, bool]], now_ns: int) -> list[int]:
        """The ids to drop of one key's history rows ``(id, time_ns, holds a value)``
        (any order), at time ``now_ns`` (ns, UTC)."""
        ordered = sorted(rows, key=lambda row: (row[1], row[0]), reverse=True)
        newest = {row[0] for row in ordered[: self.versions]}
        buckets: set[tuple[str, int]] = set()
        drop = []
        for version_id, time_ns, has_value in ordered:
            age = now_ns - time_ns
            keep = version_id in newest
            if not has_value:
                keep = keep or age < self.days * DAY_NS
            elif age < self.all_hours * HOUR_NS:
                keep = True
            elif age < self.hourly_hours * HOUR_NS:
                bucket = ("hour", time_ns // HOUR_NS)
                keep = keep or bucket not in buckets
                buckets.add(bucket)
            elif age < self.days * DAY_NS:
                bucket = ("day", time_ns // DAY_NS)
                keep = keep or bucket not in buckets
                buckets.add(bucket)
            if not keep:
                drop.append(version_id)
        return drop
