"""Server start-up: warm-ups run before health reports SERVING; a failing one does not stop it."""

from __future__ import annotations

import gc

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service_kit.grpc_server import RunningServer, build_server
from tests.support.aio import LoopThread


def test_warm_ups_run_before_serving_and_a_failing_one_is_survived(aio_loop: LoopThread) -> None:
    seen: list[str] = []

    async def health(running: RunningServer, service: str = "test.Service") -> str:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service=service)
            try:
                answer = await stub.Check(request, timeout=5)
            except grpc.aio.AioRpcError as err:
                return err.code().name
            return health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)

    async def main() -> str:
        running = build_server("127.0.0.1", 0, lambda server: None, ["test.Service"])

        async def first() -> None:
            seen.append(f"first: {await health(running)}")  # the port is open already
            seen.append(f"server: {await health(running, '')}")

        async def broken() -> None:
            seen.append("broken")
            raise ConnectionRefusedError("chain down")

        running.warm_up.extend([first, broken])
        await running.start()
        status = f"{await health(running)}, server {await health(running, '')}"
        await running.stop(0)
        return status

    assert aio_loop.run(main()) == "SERVING, server SERVING"
    # Not ready while warming up (readiness probes name the service), yet alive (liveness
    # probes name none): a long warm-up must not get the pod restarted.
    assert seen == ["first: NOT_FOUND", "server: SERVING", "broken"]


def test_a_process_server_freezes_its_heap_once_warm_and_an_in_test_one_does_not(
    aio_loop: LoopThread,
) -> None:
    async def frozen_after_start(freeze: bool) -> tuple[int, int]:
        running = build_server("127.0.0.1", 0, lambda server: None, ["test.Service"])
        running.freeze_heap = freeze
        counts = []

        async def warm() -> None:
            counts.append(gc.get_freeze_count())  # the warm-up's objects are frozen after it

        running.warm_up.append(warm)
        await running.start()
        counts.append(gc.get_freeze_count())
        await running.stop(0)
        return counts[0], counts[1]

    gc.unfreeze()
    try:
        assert aio_loop.run(frozen_after_start(False)) == (0, 0)
        during, after = aio_loop.run(frozen_after_start(True))
        assert during == 0 and after > 10_000  # the imported modules at least
    finally:
        gc.unfreeze()  # give this test process's objects back to the collector
