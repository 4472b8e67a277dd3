"""`python -m bench.echo_server PORT`: a bare grpc.aio server whose one method echoes bytes.

The baseline every gRPC workload is compared with: the same load generator against a server
that does no work at all.
"""

from __future__ import annotations

import asyncio
import sys

import grpc

ECHO = "/bench.Echo/Echo"  # the one method


async def _echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


async def serve(port: int) -> None:
    """Serve until killed."""
    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(_echo)}
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
