"""Every port the system listens on by default lies outside Linux's ephemeral port range.

A listener whose port lies inside 32768-60999 can find it briefly held by an outgoing
connection (this machine's first `make run` after a CI run once failed to bind 50052 so).
"""

from __future__ import annotations

from devnet.__main__ import DEFAULT_PORTS as DEVNET_PORTS
from devstack.__main__ import LOCAL_PORTS
from gateway.config import GatewaySettings
from quote_service.config import QuoteSettings
from ramp_service.config import RampSettings
from ramp_service.worker.config import WorkerSettings

EPHEMERAL_LOW = 32768  # Linux's default net.ipv4.ip_local_port_range starts here


def _default(settings: type, field: str) -> int:
    return int(settings.model_fields[field].default)


def test_every_default_listening_port_lies_below_the_ephemeral_range() -> None:
    ports = {
        "quote grpc": _default(QuoteSettings, "grpc_port"),
        "ramp grpc": _default(RampSettings, "grpc_port"),
        "worker metrics": _default(WorkerSettings, "metrics_port"),
        "gateway": _default(GatewaySettings, "port"),
        "gateway admin": _default(GatewaySettings, "admin_port"),
        **{f"make run {name}": int(port) for name, port in LOCAL_PORTS.items()},
        **{f"devnet {name}": int(port) for name, port in DEVNET_PORTS.items()},
    }
    inside = {name: port for name, port in ports.items() if port >= EPHEMERAL_LOW}
    assert not inside, inside


def test_make_run_listens_where_the_services_do_by_default() -> None:
    assert int(LOCAL_PORTS["QUOTE_GRPC_PORT"]) == _default(QuoteSettings, "grpc_port")
    assert int(LOCAL_PORTS["RAMP_GRPC_PORT"]) == _default(RampSettings, "grpc_port")
    assert int(LOCAL_PORTS["GATEWAY_PORT"]) == _default(GatewaySettings, "port")
    assert int(LOCAL_PORTS["WORKER_METRICS_PORT"]) == _default(WorkerSettings, "metrics_port")
    assert RampSettings.model_fields["quote_service_target"].default.endswith(
        f":{LOCAL_PORTS['QUOTE_GRPC_PORT']}"
    )
