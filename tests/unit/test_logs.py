"""JSON log lines carry the request id and extra fields; the batched access log writes the same
shape; client request ids are kept only when well formed."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re

import pytest

from service_kit.logs import (
    PIPE_BUF,
    AccessLog,
    JsonFormatter,
    _chunks,
    new_request_id,
    request_id,
)


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


def lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines()]


def test_access_lines_are_json_in_the_shape_of_every_other_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def main() -> tuple[str, str]:
        access = AccessLog(flush_s=60, max_lines=2)
        access.record("req-1", "/x.Y/Z", "OK", 1.25)
        queued = capsys.readouterr().err
        access.record("req-2", "/x.Y/Z", "NOT_FOUND:QUOTE_NOT_FOUND", 0.5)  # the limit: written
        return queued, capsys.readouterr().err

    queued, written = asyncio.run(main())
    assert queued == ""
    first, second = lines(written)
    assert first["request_id"] == "req-1" and first["ms"] == 1.25
    assert first["level"] == "INFO" and first["logger"] == "grpc" and first["msg"] == "rpc"
    assert second["outcome"] == "NOT_FOUND:QUOTE_NOT_FOUND" and second["method"] == "/x.Y/Z"
    assert str(first["ts"]).endswith("+00:00")
    # The same keys a line through logging has, for the same call.
    record = logging.makeLogRecord(
        {"name": "grpc", "levelname": "INFO", "msg": "rpc", "method": "/x.Y/Z", "outcome": "OK"}
    )
    record.ms = 1.25
    token = request_id.set("req-1")
    try:
        via_logging = json.loads(JsonFormatter().format(record))
    finally:
        request_id.reset(token)
    assert set(via_logging) == set(first)


def test_on_a_loop_lines_are_written_together_after_the_flush_interval(
    capfd: pytest.CaptureFixture[str],
) -> None:
    async def main() -> tuple[str, str]:
        access = AccessLog(flush_s=0.05)
        for i in range(3):
            access.record(f"r{i}", "/x.Y/Z", "OK", 1.0)
        await asyncio.sleep(0)
        before = capfd.readouterr().err
        await asyncio.sleep(0.2)
        return before, capfd.readouterr().err

    before, after = asyncio.run(main())
    assert before == ""
    assert [e["request_id"] for e in lines(after)] == ["r0", "r1", "r2"]


def test_flush_writes_what_is_queued_and_off_a_loop_a_line_is_written_at_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    access = AccessLog()
    access.record("r1", "/x.Y/Z", "OK", 1.0)  # no running loop here: written now
    assert [e["request_id"] for e in lines(capsys.readouterr().err)] == ["r1"]
    access.flush()
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    "given",
    ['a"b', "a\\b", "x" * 129, "new\nline", "", "id with space", "ünï"],
)
def test_a_malformed_client_request_id_is_replaced(given: str) -> None:
    rid = new_request_id(given)
    assert rid != given and re.fullmatch(r"[0-9a-f]{13,}", rid)


def test_well_formed_client_request_ids_are_kept_and_our_own_are_unique() -> None:
    for given in ("req-9", "0b7c1f9e-4a4e-4d7a-9d8e-2a1b3c4d5e6f", "trace:1.2_3"):
        assert new_request_id(given) == given
    ours = {new_request_id() for _ in range(10_000)}
    assert len(ours) == 10_000


def test_an_outcome_from_another_service_is_escaped(capsys: pytest.CaptureFixture[str]) -> None:
    AccessLog().record("r1", "/x.Y/Z", 'UNAVAILABLE:QUOTE_"ODD"\nREASON', 1.0)
    [entry] = lines(capsys.readouterr().err)
    assert entry["outcome"] == 'UNAVAILABLE:QUOTE_"ODD"\nREASON'


def test_a_flush_writes_whole_lines_in_pipe_sized_writes() -> None:
    lines_in = [f'{{"n": {i}, "pad": "{"x" * 90}"}}\n' for i in range(200)]
    chunks = _chunks(lines_in)
    assert "".join(chunks) == "".join(lines_in)
    assert all(len(c.encode()) <= PIPE_BUF and c.endswith("\n") for c in chunks)
    for chunk, following in itertools.pairwise(chunks):  # each as full as it can be
        assert len((chunk + following.splitlines(keepends=True)[0]).encode()) > PIPE_BUF
    assert _chunks(["y" * 5000 + "\n"]) == ["y" * 5000 + "\n"]  # a longer line goes alone
