"""Worker metrics in the Prometheus text format."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class WorkerMetrics:
    """Counters and histograms the processor updates, plus gauges refreshed from the database."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.phase_seconds = Histogram(
            "ramp_phase_duration_seconds",
            "Time from entering a phase to leaving it.",
            ["phase"],
            registry=self.registry,
            buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600),
        )
        self.retries = Counter(
            "ramp_phase_retries_total",
            "Recoverable errors by phase and reason.",
            ["phase", "reason"],
            registry=self.registry,
        )
        self.lease_losses = Counter(
            "ramp_lease_losses_total",
            "Runs stopped because another worker took the lease.",
            registry=self.registry,
        )
        self.reviews_after_abort = Counter(
            "ramp_reviews_after_abort_total",
            "Ramps ended without the user's money (timed out, failed, cancelled) on which a watch"
            " found what a person must settle (LATE_DEPOSIT: money sent anyway), by reason."
            " Alert on any increase.",
            ["reason"],
            registry=self.registry,
        )
        self.ramps = Gauge(
            "ramp_ramps", "Ramps by status and phase.", ["status", "phase"], registry=self.registry
        )
        self.journal = Gauge(
            "ramp_journal_operations",
            "Operation journal entries by state.",
            ["state"],
            registry=self.registry,
        )

    def observe_phase(self, phase: str, seconds: float) -> None:
        """Record how long a ramp spent in `phase`."""
        self.phase_seconds.labels(phase=phase).observe(max(seconds, 0.0))
