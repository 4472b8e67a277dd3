"""`python -m ramp_service` runs the ramp gRPC server."""

from ramp_service.main import run

run()
