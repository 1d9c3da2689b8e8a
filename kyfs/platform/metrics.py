"""Operation metrics of the mount daemon, in the Prometheus text exposition format.

Counted per FUSE operation: calls, errors by errno, bytes read and written, and
latency in a histogram (seconds; buckets from 10 us to 10 s). The text format
follows prometheus.io/docs/instrumenting/exposition_formats. ``parse`` reads it
back (for ``kyfs stats``). With the optional ``prometheus_client`` package the
same numbers can be served over HTTP (:func:`serve_http`).

Thread-safety: each thread counts into a shard of its own (no lock on the request
path: with one lock, py-spy found 5% of the daemon's samples during `tar x` waiting on
it); a reader (the control tree, an HTTP thread) sums the shards under the lock that
guards their list. Copies of a shard's dicts are taken whole under the GIL, so a sum
is at most one call behind a thread that is counting at that moment.
"""

from __future__ import annotations

import errno as errno_names
import threading
import time
from bisect import bisect_left
from collections import defaultdict
from typing import Any

BUCKETS = (1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1, 0.5, 1.0, 10.0)  # seconds
PREFIX = "kyfs"


class _Shard:
    """One thread's counts (only that thread writes them)."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = defaultdict(int)
        self.errors: dict[tuple[str, str], int] = defaultdict(int)
        self.buckets: dict[str, list[int]] = {}
        self.sums: dict[str, float] = defaultdict(float)
        self.bytes_read = 0
        self.bytes_written = 0


class Metrics:
    """Counters and latency histograms per operation name."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards _shards (the list), not the counts
        self._shards: list[_Shard] = []
        self._local = threading.local()
        self.started = time.time()
        self.last_call = time.monotonic()  # when the last operation ended (monotonic s)

    def _shard(self) -> _Shard:
        shard: _Shard | None = getattr(self._local, "shard", None)
        if shard is None:
            shard = self._local.shard = _Shard()
            with self._lock:
                self._shards.append(shard)
        return shard

    def record(self, operation: str, seconds: float, error: int | None = None) -> None:
        """Count one call of ``operation`` that took ``seconds`` and failed with ``error``."""
        shard = self._shard()
        shard.calls[operation] += 1
        if error is not None:
            name = errno_names.errorcode.get(error, str(error))
            shard.errors[(operation, name)] += 1
        counts = shard.buckets.get(operation)
        if counts is None:
            counts = shard.buckets[operation] = [0] * (len(BUCKETS) + 1)
        counts[bisect_left(BUCKETS, seconds)] += 1  # le: the first bound >= seconds
        shard.sums[operation] += seconds
        self.last_call = time.monotonic()

    def idle_s(self) -> float:
        """Seconds since the last operation ended (or since these metrics began)."""
        return time.monotonic() - self.last_call

    def add_bytes(self, read: int = 0, written: int = 0) -> None:
        """Count bytes served by read and accepted by write."""
        shard = self._shard()
        shard.bytes_read += read
        shard.bytes_written += written

    def snapshot(self) -> dict[str, Any]:
        """A consistent copy: calls, errors, bytes, and per operation the cumulative
        bucket counts (one per BUCKETS bound, then +Inf) and the sum of seconds, summed
        over every thread's shard."""
        with self._lock:
            shards = list(self._shards)
        calls: dict[str, int] = defaultdict(int)
        errors: dict[tuple[str, str], int] = defaultdict(int)
        buckets: dict[str, list[int]] = {}
        sums: dict[str, float] = defaultdict(float)
        read = written = 0
        for shard in shards:
            for op, n in dict(shard.calls).items():  # dict(): one copy under the GIL
                calls[op] += n
            for key, n in dict(shard.errors).items():
                errors[key] += n
            for op, counts in dict(shard.buckets).items():
                total = buckets.setdefault(op, [0] * (len(BUCKETS) + 1))
                for i, count in enumerate(list(counts)):
                    total[i] += count
            for op, seconds in dict(shard.sums).items():
                sums[op] += seconds
            read += shard.bytes_read
            written += shard.bytes_written
        histograms = {}
        for op, counts in buckets.items():
            cumulative, running = [], 0
            for count in counts:
                running += count
                cumulative.append(running)
            histograms[op] = (cumulative, sums[op])
        return {
            "calls": dict(calls),
            "errors": dict(errors),
            "read": read,
            "written": written,
            "histograms": histograms,
            "started": self.started,
        }

    def render(self) -> str:
        """Every metric in the Prometheus text format."""
        snap = self.snapshot()
        lines = [
            f"# HELP {PREFIX}_operations_total FUSE operations served, by operation.",
            f"# TYPE {PREFIX}_operations_total counter",
        ]
        lines += [
            f'{PREFIX}_operations_total{{operation="{op}"}} {n}'
            for op, n in sorted(snap["calls"].items())
        ]
        lines += [
            f"# HELP {PREFIX}_errors_total Failed FUSE operations, by operation and errno.",
            f"# TYPE {PREFIX}_errors_total counter",
        ]
        lines += [
            f'{PREFIX}_errors_total{{operation="{op}",errno="{name}"}} {n}'
            for (op, name), n in sorted(snap["errors"].items())
        ]
        for name, value, text in (
            ("read_bytes_total", snap["read"], "Bytes returned by read."),
            ("written_bytes_total", snap["written"], "Bytes accepted by write."),
        ):
            lines += [
                f"# HELP {PREFIX}_{name} {text}",
                f"# TYPE {PREFIX}_{name} counter",
                f"{PREFIX}_{name} {value}",
            ]
        lines += [
            f"# HELP {PREFIX}_operation_seconds Latency of FUSE operations.",
            f"# TYPE {PREFIX}_operation_seconds histogram",
        ]
        for op, (cumulative, total) in sorted(snap["histograms"].items()):
            for bound, count in zip(_bounds(), cumulative, strict=True):
                lines.append(
                    f'{PREFIX}_operation_seconds_bucket{{operation="{op}",le="{bound}"}} {count}'
                )
            lines.append(f'{PREFIX}_operation_seconds_sum{{operation="{op}"}} {total}')
            lines.append(f'{PREFIX}_operation_seconds_count{{operation="{op}"}} {cumulative[-1]}')
        lines += [
            f"# HELP {PREFIX}_start_time_seconds When the daemon started (Unix time).",
            f"# TYPE {PREFIX}_start_time_seconds gauge",
            f"{PREFIX}_start_time_seconds {snap['started']}",
        ]
        return "\n".join(lines) + "\n"


def _bounds() -> list[str]:
    return [repr(b) for b in BUCKETS] + ["+Inf"]


def parse(text: str) -> dict[str, Any]:
    """Prometheus text -> ``{"operations": {op: n}, "errors": {"op errno": n},
    "read_bytes": n, "written_bytes": n, "latency_seconds": {op: {"count", "sum"}},
    "start_time": t}`` (what ``kyfs stats --json`` prints)."""
    result: dict[str, Any] = {
        "operations": {},
        "errors": {},
        "read_bytes": 0,
        "written_bytes": 0,
        "latency_seconds": {},
        "start_time": None,
    }
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, _, value = line.rpartition(" ")
        name, _, raw_labels = name_labels.partition("{")
        labels = dict(
            part.split("=", 1) for part in raw_labels.rstrip("}").split(",") if "=" in part
        )
        labels = {k: v.strip('"') for k, v in labels.items()}
        number = float(value)
        short = name.removeprefix(PREFIX + "_")
        if short == "operations_total":
            result["operations"][labels["operation"]] = int(number)
        elif short == "errors_total":
            result["errors"][f"{labels['operation']} {labels['errno']}"] = int(number)
        elif short in ("read_bytes_total", "written_bytes_total"):
            result[short.removesuffix("_total")] = int(number)
        elif short in ("operation_seconds_sum", "operation_seconds_count"):
            entry = result["latency_seconds"].setdefault(labels["operation"], {})
            entry[short.rpartition("_")[2]] = number
        elif short == "start_time_seconds":
            result["start_time"] = number
    return result


def serve_http(metrics: Metrics, port: int) -> None:
    """Serve ``metrics`` at http://127.0.0.1:PORT/metrics with prometheus_client.

    Raises:
        InvalidInput: (exit 2) prometheus_client is not installed (pip install 'kyfs[metrics]').
    """
    from kyfs.core.errors import InvalidInput

    try:
        from prometheus_client import CollectorRegistry, start_http_server
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
    except ImportError:
        raise InvalidInput(
            "--metrics-port needs prometheus_client: pip install 'kyfs[metrics]'"
        ) from None

    class Collector:
        def collect(self) -> list[Metric]:
            snap = metrics.snapshot()
            ops = CounterMetricFamily(
                f"{PREFIX}_operations", "FUSE operations served", labels=["operation"]
            )
            for op, count in snap["calls"].items():
                ops.add_metric([op], count)
            errs = CounterMetricFamily(
                f"{PREFIX}_errors", "Failed FUSE operations", labels=["operation", "errno"]
            )
            for (op, name), count in snap["errors"].items():
                errs.add_metric([op, name], count)
            read = CounterMetricFamily(f"{PREFIX}_read_bytes", "Bytes returned by read")
            read.add_metric([], snap["read"])
            written = CounterMetricFamily(f"{PREFIX}_written_bytes", "Bytes accepted by write")
            written.add_metric([], snap["written"])
            latency = HistogramMetricFamily(
                f"{PREFIX}_operation_seconds", "Latency of FUSE operations", labels=["operation"]
            )
            for op, (cumulative, total) in snap["histograms"].items():
                latency.add_metric([op], list(zip(_bounds(), cumulative, strict=True)), total)
            return [ops, errs, read, written, latency]

    registry = CollectorRegistry()
    registry.register(Collector())
    start_http_server(port, addr="127.0.0.1", registry=registry)
