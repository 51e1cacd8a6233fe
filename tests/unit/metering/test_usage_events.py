"""UsageEvent: ids derived from request ids, the billing rule, the wire format."""

from __future__ import annotations

import pytest

from tenantserve.errors import InvalidRequestError
from tenantserve.metering.events import (
    UsageEvent,
    UsageStatus,
    decode_batch,
    encode_batch,
    usage_event_id,
)
from tests.helpers.usage import usage_event


def test_the_event_id_is_derived_from_the_request_id_alone() -> None:
    assert usage_event_id("req_1") == usage_event_id("req_1") != usage_event_id("req_2")
    a, b = usage_event(1), usage_event(1, output_tokens=99)
    assert a.event_id == b.event_id == usage_event_id("req_1")
    assert a.event_id.startswith("ue_") and len(a.event_id) == 35


def test_json_round_trips_one_event_and_a_batch() -> None:
    events = [usage_event(i, adapter="adapter:ten_1/tone@2" if i else "") for i in range(3)]
    assert UsageEvent.from_json(events[0].to_json()) == events[0]
    assert decode_batch(encode_batch(events)) == events
    assert decode_batch(events[1].to_json()) == [events[1]]


@pytest.mark.parametrize(
    ("status", "output", "billed"),
    [
        (UsageStatus.COMPLETED, 5, True),
        (UsageStatus.CANCELLED, 3, True),  # a stream the client left: what it was sent
        (UsageStatus.CANCELLED, 0, True),  # left before the first token: the prompt ran
        (UsageStatus.ERROR, 4, True),  # failed after generating: what was generated
        (UsageStatus.ERROR, 0, False),  # failed before any output: nothing
    ],
)
def test_the_billing_rule(status: UsageStatus, output: int, billed: bool) -> None:
    e = usage_event(1, status=status, output_tokens=output)
    assert e.billed is billed
    assert e.billable_input_tokens == (10 if billed else 0)
    assert e.billable_cached_input_tokens == (2 if billed else 0)
    assert e.billable_output_tokens == (output if billed else 0)


@pytest.mark.parametrize(
    "fields",
    [
        {"input_tokens": -1},
        {"cached_input_tokens": 11},
        {"ended_at": 1_795_000_000.0, "started_at": 1_795_000_001.0},
    ],
)
def test_impossible_events_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(InvalidRequestError):
        usage_event(1, **fields)


@pytest.mark.parametrize(
    "raw", [b"not json", b"[1, 2]", b'{"event_id": "x"}', b'{"status": "lost"}']
)
def test_malformed_wire_events_are_invalid_requests(raw: bytes) -> None:
    with pytest.raises(InvalidRequestError):
        UsageEvent.from_json(raw)
