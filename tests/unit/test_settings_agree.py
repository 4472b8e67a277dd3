"""Settings two processes must agree on are one variable, read by both."""

from __future__ import annotations

import pytest

from cleanup_job.config import CleanupSettings
from ramp_service.config import RampSettings


def test_the_idempotency_window_is_one_variable_for_the_ramp_service_and_the_cleanup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The cleanup deleting keys the ramp service still replays would let a retry run twice."""
    assert CleanupSettings().idempotency_ttl_s == RampSettings().idempotency_ttl_s
    monkeypatch.setenv("IDEMPOTENCY_TTL_S", "172800")
    assert CleanupSettings().idempotency_ttl_s == RampSettings().idempotency_ttl_s == 172800
