"""gRPC surface of the ramp context."""
