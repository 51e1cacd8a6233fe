"""How the shipper splits an outbox batch into stream messages."""

from __future__ import annotations

from tenantserve.metering.events import decode_batch
from tenantserve.metering.outbox import OutboxEntry
from tenantserve.metering.shipper import split_messages
from tests.helpers.usage import usage_event


def _entries(n: int, tenants: int = 3) -> list[OutboxEntry]:
    events = [usage_event(i, tenant_id=f"ten_{i % tenants}") for i in range(n)]
    return [OutboxEntry(i + 1, e.tenant_id, e.event_id, e.to_json()) for i, e in enumerate(events)]


def test_each_message_holds_one_tenant_in_outbox_order() -> None:
    entries = _entries(30)
    messages = split_messages(entries, max_events=100)
    assert len(messages) == 3
    for message in messages:
        assert len({e.tenant_id for e in message}) == 1
        assert [e.seq for e in message] == sorted(e.seq for e in message)
    assert sorted(e.seq for m in messages for e in m) == [e.seq for e in entries]


def test_messages_are_bounded_by_events_and_bytes() -> None:
    entries = _entries(50, tenants=1)
    assert [len(m) for m in split_messages(entries, max_events=20)] == [20, 20, 10]
    size = len(entries[0].body)
    by_bytes = split_messages(entries, max_events=1_000, max_bytes=3 * size + 3)
    assert all(len(m) <= 3 for m in by_bytes)
    assert sum(len(m) for m in by_bytes) == 50


def test_an_event_larger_than_the_byte_bound_still_gets_a_message() -> None:
    entries = _entries(2, tenants=1)
    assert [len(m) for m in split_messages(entries, max_events=10, max_bytes=1)] == [1, 1]


def test_a_message_body_is_its_events_as_json_lines() -> None:
    entries = _entries(4, tenants=1)
    (message,) = split_messages(entries, max_events=10)
    body = b"\n".join(e.body for e in message)
    assert decode_batch(body) == [e.event() for e in entries]
