"""Domain errors: a stable `reason` and a message, no transport codes.

Bounded contexts raise subclasses of these kinds; `service_kit.grpc_server` maps each kind to a
gRPC status once, in one table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class FieldViolation:
    """One bad field in a request: its path and what is wrong with it."""

    field: str
    description: str


@dataclass
class DomainError(Exception):
    """Base of every expected error. `reason` is UPPER_SNAKE_CASE and never changes."""

    reason: str
    message: str
    violations: list[FieldViolation] = field(default_factory=list)
    metadata: Mapping[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


class InvalidInput(DomainError):
    """The request is malformed or violates a rule (maps to INVALID_ARGUMENT)."""


class NotFound(DomainError):
    """The named resource does not exist (NOT_FOUND)."""


class PreconditionFailed(DomainError):
    """The resource is in a state that forbids the operation (FAILED_PRECONDITION)."""


class Conflict(DomainError):
    """The request conflicts with another one, e.g. a lost race (ABORTED)."""


class AlreadyExists(DomainError):
    """The resource exists already (ALREADY_EXISTS)."""


class DependencyUnavailable(DomainError):
    """A service, chain or partner we depend on did not answer (UNAVAILABLE)."""
