"""JSON log lines carry the request id and extra fields."""

from __future__ import annotations

import json
import logging

from service_kit.logs import JsonFormatter, request_id


def test_json_line_with_request_id_and_extras() -> None:
    record = logging.makeLogRecord(
        {"name": "grpc", "levelname": "INFO", "msg": "rpc %s", "args": ("ok",), "method": "/x.Y/Z"}
    )
    token = request_id.set("req-123")
    try:
        line = JsonFormatter().format(record)
    finally:
        request_id.reset(token)
    entry = json.loads(line)
    assert entry["msg"] == "rpc ok"
    assert entry["request_id"] == "req-123"
    assert entry["method"] == "/x.Y/Z"
    assert entry["ts"].endswith("+00:00")
