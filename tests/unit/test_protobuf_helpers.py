"""`service_kit.protobuf.timestamp` agrees with protobuf's own `Timestamp.FromDatetime`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given
from hypothesis import strategies as st

from service_kit.protobuf import timestamp


def _reference(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


@given(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    st.sampled_from(
        [None, UTC, timezone(timedelta(hours=-3)), timezone(timedelta(hours=5, minutes=30))]
    ),
)
def test_same_timestamp_as_from_datetime(naive: datetime, zone: timezone | None) -> None:
    value = naive if zone is None else naive.replace(tzinfo=zone)
    assert timestamp(value) == _reference(value)


def test_before_the_epoch_nanos_stay_positive() -> None:
    value = datetime(1969, 12, 31, 23, 59, 59, 500_000, tzinfo=UTC)
    assert timestamp(value) == Timestamp(seconds=-1, nanos=500_000_000)


def test_control_characters_are_found_in_nested_and_repeated_strings() -> None:
    from pendulumpay.ramp.v1 import ramp_pb2
    from service_kit.protobuf import control_characters

    request = ramp_pb2.StartRampRequest(ramp_id="r\x00")
    request.presigned_txs.add(phase="fine\ttab\nnewline\r")
    request.presigned_txs.add(phase="bell\x07")
    request.additional_data.tax_id = "del\x7f"
    found = {v.field for v in control_characters(request)}
    assert found == {"ramp_id", "presigned_txs[1].phase", "additional_data.tax_id"}
    assert control_characters(ramp_pb2.StartRampRequest(ramp_id="ok")) == []
