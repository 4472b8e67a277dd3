"""`make bench [ARGS=--quick]`: measure every workload against same-run baselines.

Prints a table and writes bench/results/latest.json. Baselines (a bare grpc.aio echo server
through the same load generator; raw psycopg selects and inserts; the raw SQL claim ceiling) are
measured in the same run on the same machine, so the ratios mean something anywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import os
import statistics
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench import baselines, cpu, h2, loadgen, stack, targets, workloads
from bench.loadgen import Result

RESULTS = Path(__file__).resolve().parent / "results"


def run(quick: bool) -> dict[str, Any]:
    """Run everything; return the results document."""
    seconds = 4.0 if quick else 15.0
    with ExitStack() as processes:
        sut = stack.start(processes)
        costs: dict[str, dict[str, float]] = {}
        echo_rounds: list[float] = []

        def accounted(
            name: str, servers: list[str], measure: Callable[[], tuple[Result, Result]]
        ) -> tuple[Result, Result]:
            """Run a (peak, half) measurement; record its CPU per request on each side. Each
            workload is preceded by a short echo peak: this VM's speed drifts by up to 2x over
            minutes, so the echo baseline is the median of rounds taken beside the workloads."""
            if name != "echo":
                echo_rounds.append(workloads.echo_peak(sut.echo_address, seconds / 2).qps)
            roots = [sut.pids[s] for s in servers]
            server_before, generator_before = cpu.cpu_seconds(roots), h2.GENERATOR.cpu_seconds
            calls_before = loadgen.CALLS.calls
            peak, half = measure()
            requests = max(1, loadgen.CALLS.calls - calls_before)  # warm-up calls included
            costs[name] = {
                "server_us": round(1e6 * (cpu.cpu_seconds(roots) - server_before) / requests),
                "generator_us": round(
                    1e6 * (h2.GENERATOR.cpu_seconds - generator_before) / requests, 1
                ),
            }
            return peak, half

        echo_peak, echo_half = accounted(
            "echo", ["echo"], lambda: workloads.echo(sut.echo_address, seconds)
        )
        echo_rounds.append(echo_peak.qps)
        results: dict[str, Any] = {
            "baselines": {
                "echo_qps": 0.0,  # the median of every round, set below
                "pg_select_per_s": round(
                    baselines.pg_select_per_s(sut.work_database_url, seconds), 1
                ),
                "pg_insert_per_s": round(
                    baselines.pg_insert_per_s(sut.work_database_url, seconds), 1
                ),
            },
            "workloads": {},
            # Not part of the targets: CPU per request of the service (with Envoy for REST) and
            # of the load generator (h2gen), warm-up included; they share the cores.
            "cpu_per_request": costs,
        }
        w = results["workloads"]
        selects = [name for name in sut.pids if name.startswith("select-")]
        select_peak, _ = accounted(
            "echo_select", selects, lambda: workloads.echo_select(sut.select_address, seconds)
        )
        w["quote_get"] = workloads.row(
            *accounted(
                "quote_get", ["quote"], lambda: workloads.quote_get(sut.quote_address, seconds)
            )
        )
        w["quote_create"] = workloads.row(
            *accounted(
                "quote_create",
                ["quote"],
                lambda: workloads.quote_create(sut.quote_address, seconds),
            )
        )
        # Where register's and start's CPU goes, per call: each service (its SO_REUSEPORT
        # siblings included), the devnet's chains and partners, PostgreSQL, and this process
        # (the load generator: register and start run on the Python loop).
        groups: dict[str, Callable[[], float]] = {
            name: functools.partial(cpu.cpu_seconds, [sut.pids[name]])
            for name in ("ramp", "quote", "devnet")
            if name in sut.pids
        }
        groups["postgres"] = cpu.postgres_seconds
        groups["bench"] = lambda: cpu.cpu_seconds([os.getpid()], descendants=False)
        combined, halves = asyncio.run(
            workloads.register_start(
                sut.ramp_address, sut.quote_address, sut.passphrase, seconds, groups
            )
        )
        w["register_start"] = combined
        results["register_start_parts"] = halves
        ids = workloads.seed_polled_ramps(sut.database_url, 50)
        w["status_poll_grpc"] = workloads.row(
            *accounted(
                "status_poll_grpc",
                ["ramp"],
                lambda: workloads.status_poll_grpc(sut.ramp_address, ids, seconds),
            )
        )
        w["status_poll_rest"] = workloads.row(
            *accounted(
                "status_poll_rest",
                ["ramp", "envoy"],
                lambda: workloads.status_poll_rest(sut.rest_url, ids, seconds),
            )
        )
        echo_qps = round(statistics.median(echo_rounds), 1)
        results["baselines"]["echo_qps"] = echo_qps
        results["echo_qps_rounds"] = echo_rounds

        # Not a target: what a handler doing only one primary-key select reaches here, and the
        # read workloads against it (how much of their cost is ours beyond the one round trip).
        def share(a: float, b: float) -> float:
            return round(a / b, 3) if b else 0.0

        results["references"] = {
            "echo_select_qps": round(select_peak.qps, 1),
            "echo_select_vs_echo": share(select_peak.qps, echo_qps),
            **{
                f"{name}_vs_echo_select": share(w[name]["qps"], select_peak.qps)
                for name in ("quote_get", "status_poll_grpc", "status_poll_rest")
            },
        }
        # The ceiling: 3000 freshly vacuumed due ramps claimed and finished by raw SQL, the
        # median of three rounds (one round lasts well under a second).
        ceilings = []
        for _ in range(3):
            workloads.seed_running_ramps(sut.work_database_url, 3000)
            baselines.settle(sut.work_database_url)
            ceilings.append(baselines.claim_ceiling_per_s(sut.work_database_url))
        results["baselines"]["claim_ceiling_per_s"] = round(statistics.median(ceilings), 1)
        advance_seconds, window = (20.0, 5.0) if quick else (600.0, 60.0)
        # Enough due ramps that the processor never runs dry (the last window must still work):
        # for twice the rate this machine's processor reached so far (a tenth of the ceiling).
        # A fixed 2000/s ran dry in the last window once the VM ran faster (session 11).
        per_s = max(2000.0, 0.2 * results["baselines"]["claim_ceiling_per_s"])
        workloads.seed_running_ramps(sut.work_database_url, int(per_s * (advance_seconds + 5)))
        baselines.settle(sut.work_database_url)
        rate, ratio, due_left, cores = asyncio.run(
            workloads.phase_advance(sut.work_database_url, advance_seconds, window)
        )
        results["phase_advance_cores"] = cores
        w["phase_advance"] = {"ramps_per_s": round(rate, 2), "last_minute_ratio": round(ratio, 3)}
        results["phase_advance_due_left"] = due_left
        results["phase_advance_ran_short"] = due_left < rate * window
        baselines.settle(sut.database_url)  # the processor's WAL is not cleanup's to flush
        rows_per_s, max_batch_ms, poll_ratio = workloads.cleanup(
            sut.database_url, sut.ramp_address, ids[0], 100_000 if quick else 500_000, seconds
        )
        w["cleanup"] = {
            "rows_per_s": round(rows_per_s, 1),
            "max_batch_ms": max_batch_ms,
            "poll_ratio": round(poll_ratio, 3),
        }
        results["echo_latency_at_half_peak"] = {
            "p50_ms": echo_half.p50_ms,
            "p99_ms": echo_half.p99_ms,
        }
    results["stack"] = "make run" if sut.attached else "own"
    results["host"] = cpu.host()
    return results


def print_table(results: dict[str, Any]) -> None:
    """Human-readable summary with ratios to the baselines."""
    base = results["baselines"]
    print(
        f"system under test: {'the make run stack' if results['stack'] == 'make run' else 'own'}\n"
    )
    host = results.get("host", {})
    if host.get("sched_autogroup") == 1:
        print(
            "note: kernel.sched_autogroup_enabled=1 on this host: all of PostgreSQL's backends\n"
            "share one scheduling group beside the bench's (bench/cpu.py host()); cleanup's worst\n"
            "batch shows the stalls. A host running the database beside busy programs wants it\n"
            "off: sysctl -w kernel.sched_autogroup_enabled=0 (README, Performance).\n"
        )
    print(f"{'baseline':<24}{'value':>14}")
    for key, value in base.items():
        print(f"{key:<24}{value:>14.1f}")
    print(f"\n{'workload':<24}{'qps':>10}{'vs echo':>9}{'p50 ms':>9}{'p99 ms':>9}{'p99.9 ms':>10}")
    for name, row in results["workloads"].items():
        if "qps" in row:
            ratio = row["qps"] / base["echo_qps"] if base["echo_qps"] else 0
            print(
                f"{name:<24}{row['qps']:>10.1f}{ratio:>9.2f}{row['p50_ms']:>9.2f}{row['p99_ms']:>9.2f}"
                f"{row['p999_ms']:>10.2f}"
            )
        else:
            print(f"{name:<24}" + "  ".join(f"{k}={v}" for k, v in row.items()))
    references = results.get("references", {})
    if references:
        print("\nreference (not a target): a handler that does one primary-key select")
        for key, value in references.items():
            print(f"{key:<36}{value:>10}")
    costs = results.get("cpu_per_request", {})
    if costs:
        print(f"\n{'cpu per request':<24}{'service us':>12}{'generator us':>14}")
        for name, cost in costs.items():
            print(f"{name:<24}{cost['server_us']:>12.0f}{cost['generator_us']:>14.1f}")
    parts = results.get("register_start_parts", {})
    if any("cpu_ms" in part for part in parts.values()):
        print("\ncpu ms per call at peak (where register+start's cycles go)")
        for name, part in parts.items():
            spent = part.get("cpu_ms", {})
            print(
                f"{name:<10}"
                + "  ".join(f"{k}={v:.2f}" for k, v in spent.items())
                + f"  total={sum(spent.values()):.2f}"
            )
    if cores := results.get("phase_advance_cores"):
        print(
            "\nphase advance, cores busy: "
            + "  ".join(f"{k}={v:.2f}" for k, v in cores.items())
            + f"  of {results.get('host', {}).get('cpus', '?')}"
        )
    if results.get("phase_advance_ran_short"):
        print(
            "\nwarning: fewer ramps than a window's work were still due at the end: the\n"
            "processor may have run dry in its last window, which then measured the seed"
        )
    print("\n" + targets.table(targets.verdicts(results)))


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short runs (under 5 minutes)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    results = run(args.quick)
    results["targets"] = targets.as_json(targets.verdicts(results))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)


if __name__ == "__main__":
    main()
