"""`python -m bench.echo_server PORT [DATABASE_URL]`: a bare grpc.aio server whose one method
echoes bytes; given a database, also a method that does one primary-key select first.

`Echo` is the baseline every gRPC workload is compared with: the same load generator against a
server that does no work at all (asyncio's own loop, grpc.aio as it comes).

`Select` is a reference, not a target: the least a handler that reads one row can cost here. It
runs as the services do (uvloop, the services' `DirectPool` of autocommit psycopg connections)
and answers the `v` of the `bench_kv` row whose id the request names (the raw select baseline's
table, made by `bench.baselines.prepare_kv` before the server starts), and does nothing else:
no ORM, no domain, no mapping, no interceptor.
"""

from __future__ import annotations

import asyncio
import sys

import grpc

ECHO = "/bench.Echo/Echo"  # the one method
SELECT = "/bench.Echo/Select"  # with a database: one primary-key select, then the answer


async def _echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


async def serve(port: int, database_url: str | None = None) -> None:
    """Serve until killed."""
    methods = {"Echo": grpc.unary_unary_rpc_method_handler(_echo)}
    if database_url:
        from bench.baselines import SELECT_SQL
        from service_kit.config import ServiceSettings
        from service_kit.db import DirectPool

        pool = DirectPool(ServiceSettings(database_url=database_url), "bench-select")

        async def select(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            async with pool.connection() as conn:
                cursor = await conn.execute(SELECT_SQL, (int(request),), prepare=True)
                row = await cursor.fetchone()
            return row[0].encode() if row else b""

        methods["Select"] = grpc.unary_unary_rpc_method_handler(select)
    # Several processes may share the port (SO_REUSEPORT), as the services' processes do.
    server = grpc.aio.server(options=[("grpc.so_reuseport", 1)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Echo", methods),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    port, url = int(sys.argv[1]), (sys.argv[2] if len(sys.argv) > 2 else None)
    if url:
        from service_kit.loop import run

        run(serve(port, url), "uvloop")  # as the services run
    else:
        asyncio.run(serve(port))
