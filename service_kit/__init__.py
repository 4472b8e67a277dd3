"""Shared plumbing for every gRPC service: configuration, logging, errors, server, database.

Holds no domain code; bounded contexts import it, never each other.
"""
