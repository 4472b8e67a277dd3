"""Protobuf helpers shared by the servicers."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from service_kit.errors import FieldViolation

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timestamp(value: datetime) -> Timestamp:
    """`value` as a Timestamp, as `Timestamp.FromDatetime` makes it (a naive datetime is UTC)
    in a third of its time: every status poll renders several."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    delta = value - _EPOCH
    return Timestamp(seconds=delta.days * 86_400 + delta.seconds, nanos=delta.microseconds * 1000)


# C0 controls but tab, newline and carriage return, and DEL: never meaningful in an id, an
# address, a name or a note, and NUL cannot be stored in a PostgreSQL text column at all.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_STRING = FieldDescriptor.TYPE_STRING
_MESSAGE = FieldDescriptor.TYPE_MESSAGE


def control_characters(message: Message, prefix: str = "") -> list[FieldViolation]:
    """Every string field of `message` (nested, repeated and map ones too) holding a control
    character, as field violations."""
    found: list[FieldViolation] = []
    for fd, value in message.ListFields():
        path = prefix + fd.name
        if fd.type == _STRING:
            items = enumerate(value) if fd.is_repeated else [(None, value)]
            found += [
                FieldViolation(path if i is None else f"{path}[{i}]", "control characters")
                for i, text in items
                if _CONTROL.search(text)
            ]
        elif fd.type == _MESSAGE and fd.message_type is not None:
            if fd.message_type.GetOptions().map_entry:
                for key, item in value.items():
                    texts = [t for t in (key, item) if isinstance(t, str)]
                    if any(_CONTROL.search(t) for t in texts):
                        found.append(FieldViolation(f"{path}[{key!r}]", "control characters"))
                    elif isinstance(item, Message):
                        found += control_characters(item, f"{path}[{key!r}].")
            elif fd.is_repeated:
                for i, item in enumerate(value):
                    found += control_characters(item, f"{path}[{i}].")
            else:
                found += control_characters(value, f"{path}.")
    return found
