"""`python -m quote_service` runs the quote gRPC server."""

from quote_service.main import run

run()
