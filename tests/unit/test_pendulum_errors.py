"""How the Pendulum adapter names a failed network call (no node needed)."""

from __future__ import annotations

import pytest
from websocket import WebSocketConnectionClosedException, WebSocketTimeoutException

from ramp_service.chains.pendulum import CONNECTION_ERRORS, _network_error


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        # The socket's read timeout, raised in the call's thread: the same verdict as the
        # loop's deadline, whichever of the two fires first.
        (WebSocketTimeoutException("Connection timed out"), "PENDULUM_TIMEOUT"),
        (TimeoutError("timed out"), "PENDULUM_TIMEOUT"),
        (WebSocketConnectionClosedException("socket is already closed."), "PENDULUM_UNREACHABLE"),
        (ConnectionRefusedError(111, "Connection refused"), "PENDULUM_UNREACHABLE"),
    ],
)
def test_a_read_timeout_is_a_timeout_and_a_lost_connection_is_unreachable(
    exc: Exception, reason: str
) -> None:
    assert isinstance(exc, CONNECTION_ERRORS)
    error = _network_error(exc)
    assert (error.reason, error.recoverable) == (reason, True)
