"""The REST gateway: Envoy transcoding `/v1/ramp/...` JSON to the services' gRPC."""
