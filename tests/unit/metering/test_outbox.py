"""Outbox: appends are durable when they return (other connections see them), group
commits keep order, entries stay until deleted, and a reopened file keeps them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tenantserve.metering.outbox import Outbox
from tests.helpers.usage import usage_event


async def test_appended_events_are_read_back_in_order_and_deleted(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.db")
    try:
        await asyncio.gather(*(outbox.append(usage_event(i)) for i in range(50)))
        entries = outbox.read(limit=1000)
        assert len(entries) == outbox.pending() == 50
        assert [e.seq for e in entries] == sorted(e.seq for e in entries)
        assert {e.event().request_id for e in entries} == {f"req_{i}" for i in range(50)}
        assert all(e.tenant_id == e.event().tenant_id for e in entries)
        assert outbox.read(limit=10, after_seq=entries[44].seq) == entries[45:50]
        outbox.delete(e.seq for e in entries[:30])
        assert outbox.pending() == 20
        assert outbox.read(limit=1000) == entries[30:]
    finally:
        outbox.close()


async def test_an_append_is_visible_to_another_process_handle_once_it_returns(
    tmp_path: Path,
) -> None:
    path = tmp_path / "outbox.db"
    writer, reader = Outbox(path), Outbox(path, synchronous="NORMAL")
    try:
        await writer.append(usage_event(7))
        [entry] = reader.read()
        assert entry.event() == usage_event(7)
        assert writer.appended.is_set()
    finally:
        writer.close()
        reader.close()
    reopened = Outbox(path)
    try:
        assert reopened.pending() == 1
    finally:
        reopened.close()


async def test_a_closed_outbox_refuses_appends_and_bad_settings_are_refused(
    tmp_path: Path,
) -> None:
    outbox = Outbox(tmp_path / "outbox.db")
    outbox.close()
    outbox.close()  # idempotent
    with pytest.raises(RuntimeError):
        await outbox.append(usage_event(1))
    with pytest.raises(ValueError, match="synchronous"):
        Outbox(tmp_path / "other.db", synchronous="OFF")
