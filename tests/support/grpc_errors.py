"""Read the google.rpc details of a failed call."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


@dataclass
class RpcFailure:
    """The parts of a rich error status tests assert on."""

    code: grpc.StatusCode
    message: str
    reason: str
    fields: list[str]
    descriptions: list[str]  # the field violations', in the same order


def failure(err: grpc.RpcError) -> RpcFailure:
    """Decode ErrorInfo and BadRequest from a failed call."""
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None, f"no rich status in {err}"
    reason, fields, descriptions = "", [], []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields = [v.field for v in bad.field_violations]
            descriptions = [v.description for v in bad.field_violations]
    return RpcFailure(err.code(), err.details() or "", reason, fields, descriptions)
