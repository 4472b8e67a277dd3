"""The one table from domain errors to gRPC statuses: every row, and the rich details."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2

from quote_service.domain.errors import QuoteConsumed, QuoteExpired, QuoteNotFound
from service_kit import errors
from service_kit.grpc_server import STATUS_BY_ERROR, rich_status, status_code_for


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.InvalidInput("BAD", "bad"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.NotFound("GONE", "gone"), grpc.StatusCode.NOT_FOUND),
        (errors.PreconditionFailed("STATE", "state"), grpc.StatusCode.FAILED_PRECONDITION),
        (errors.Conflict("RACE", "race"), grpc.StatusCode.ABORTED),
        (errors.AlreadyExists("DUP", "dup"), grpc.StatusCode.ALREADY_EXISTS),
        (errors.DependencyUnavailable("DOWN", "down"), grpc.StatusCode.UNAVAILABLE),
        (errors.DomainError("ODD", "odd"), grpc.StatusCode.INTERNAL),
        (QuoteNotFound("q"), grpc.StatusCode.NOT_FOUND),
        (QuoteExpired("q"), grpc.StatusCode.FAILED_PRECONDITION),
        (QuoteConsumed("q"), grpc.StatusCode.FAILED_PRECONDITION),
    ],
)
def test_each_kind_maps_to_its_code(error: errors.DomainError, code: grpc.StatusCode) -> None:
    assert status_code_for(error) == code


def test_table_covers_every_kind() -> None:
    kinds = {
        cls
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.DomainError)
    }
    assert kinds - {errors.DomainError} == set(STATUS_BY_ERROR)


def test_rich_status_carries_reason_and_field_violations() -> None:
    error = errors.InvalidInput(
        "INVALID_QUOTE_REQUEST", "bad", [errors.FieldViolation("input_amount", "must be positive")]
    )
    status = rich_status(grpc.StatusCode.INVALID_ARGUMENT, error.message, error.reason, error)
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    assert status.details[0].Unpack(info) and info.reason == "INVALID_QUOTE_REQUEST"
    assert info.domain == "pendulumpay.com"
    assert status.details[1].Unpack(bad)
    assert [(v.field, v.description) for v in bad.field_violations] == [
        ("input_amount", "must be positive")
    ]
