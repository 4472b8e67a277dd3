"""gRPC surface of the quote context."""
