"""Issue 8's targets, checked against one run's results: each as measured, its bound, met or not.

Ratios are to the same run's baselines. "16 concurrent retries of one start create one ramp" is
a property, not a rate: the test suite checks it (tests/integration/ramp/test_ramp_api.py,
test_sixteen_concurrent_identical_starts_start_once).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# The single-request workloads whose p99 at half of their peak the latency target bounds
# (register+start is two calls in a row, with chain and partner work between).
LATENCY_BOUND = ("quote_get", "quote_create", "status_poll_grpc", "status_poll_rest")


@dataclass(frozen=True)
class Verdict:
    """One target: what was measured, the bound, and whether it holds."""

    name: str
    value: float
    bound: float
    at_least: bool  # the value must reach the bound (else stay within it)
    met: bool
    detail: str = ""


def _check(name: str, value: float, bound: float, at_least: bool, detail: str = "") -> Verdict:
    met = value >= bound if at_least else value <= bound
    return Verdict(name, round(value, 3), bound, at_least, met, detail)


def _share(a: float, b: float) -> float:
    return a / b if b else 0.0


def verdicts(results: dict[str, Any]) -> list[Verdict]:
    """Every target the results carry the numbers for, in the issue's order."""
    base, w = results["baselines"], results["workloads"]
    echo = base.get("echo_qps", 0.0)
    out: list[Verdict] = []
    if "quote_get" in w:
        out.append(_check("quote get / echo", _share(w["quote_get"]["qps"], echo), 0.6, True))
    if "status_poll_rest" in w:
        rest = w["status_poll_rest"]["qps"]
        out.append(_check("status poll via Envoy / echo", _share(rest, echo), 0.45, True))
        if "status_poll_grpc" in w:
            grpc = w["status_poll_grpc"]["qps"]
            out.append(_check("status poll via Envoy / via gRPC", _share(rest, grpc), 0.75, True))
    bounded = {name: w[name]["p99_ms"] for name in LATENCY_BOUND if name in w}
    if bounded:
        worst = max(bounded, key=lambda name: bounded[name])
        out.append(_check("worst p99 at half of peak, ms", bounded[worst], 10.0, False, worst))
    if "quote_create" in w:
        out.append(
            _check("quote create / echo", _share(w["quote_create"]["qps"], echo), 0.35, True)
        )
    if "register_start" in w:
        ratio = _share(w["register_start"]["qps"], echo)
        out.append(_check("register+start / echo", ratio, 0.2, True))
    if "phase_advance" in w:
        advance = w["phase_advance"]
        ceiling = base.get("claim_ceiling_per_s", 0.0)
        out.append(
            _check("processor / claim ceiling", _share(advance["ramps_per_s"], ceiling), 0.25, True)
        )
        out.append(_check("processor last window / first", advance["last_minute_ratio"], 0.8, True))
    if "cleanup" in w:
        cleanup = w["cleanup"]
        out.append(_check("cleanup rows/s", cleanup["rows_per_s"], 50_000, True))
        out.append(_check("cleanup worst batch, ms", cleanup["max_batch_ms"], 50.0, False))
        out.append(_check("poll beside cleanup / without", cleanup["poll_ratio"], 0.8, True))
    return out


def as_json(found: list[Verdict]) -> list[dict[str, Any]]:
    """The verdicts as `latest.json` keeps them."""
    return [asdict(v) for v in found]


def table(found: list[Verdict]) -> str:
    """The verdicts as printed after the results."""
    lines = [f"{'target':<36}{'value':>12}{'bound':>12}  met"]
    for v in found:
        bound = f"{'>=' if v.at_least else '<='} {v.bound:g}"
        note = f"  ({v.detail})" if v.detail else ""
        lines.append(f"{v.name:<36}{v.value:>12g}{bound:>12}  {'yes' if v.met else 'NO'}{note}")
    met = sum(v.met for v in found)
    lines.append(f"{met} of {len(found)} met")
    return "\n".join(lines)
