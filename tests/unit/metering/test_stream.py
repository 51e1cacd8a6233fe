"""The usage stream's pure parts: tenant subjects and message ids."""

from __future__ import annotations

import re

import pytest

from tenantserve.metering.stream import UsageStream, message_id, subject_token
from tests.helpers.usage import usage_event

_TOKEN = re.compile(r"^[A-Za-z0-9_%-]+$")


def test_ordinary_tenant_ids_are_their_own_subject_token() -> None:
    assert subject_token("ten_01h9x-abc") == "ten_01h9x-abc"
    assert UsageStream().subject("ten_1") == "tenantserve.usage.ten_1"


@pytest.mark.parametrize("tenant_id", ["a.b", "a*", ">", "a b", "", "é", "a%2E", "a\tb"])
def test_any_tenant_id_becomes_one_valid_subject_token(tenant_id: str) -> None:
    token = subject_token(tenant_id)
    assert _TOKEN.match(token), token


def test_distinct_tenant_ids_never_share_a_subject() -> None:
    ids = ["a.b", "a_b", "a%2Eb", "a%b", "a%25b", "", "%", "é", "%C3%A9"]
    assert len({subject_token(t) for t in ids}) == len(ids)


def test_a_stream_of_its_own_has_its_own_subjects() -> None:
    stream = UsageStream(name="T_1", subject_prefix="test1.usage")
    assert stream.subjects == "test1.usage.*"
    assert stream.subject("x.y") == "test1.usage.x%2Ey"
    assert stream.config().duplicate_window == 120.0


def test_a_single_event_message_is_identified_by_its_event_id() -> None:
    event = usage_event(1)
    assert message_id([event.event_id]) == event.event_id


def test_a_batch_message_id_depends_only_on_which_events_it_holds() -> None:
    ids = [usage_event(i).event_id for i in range(5)]
    assert message_id(ids) == message_id(reversed(ids))
    assert message_id(ids) != message_id(ids[:4])
    assert message_id(ids).startswith("ub_")
    assert message_id(ids) not in ids


def test_an_empty_message_has_no_id() -> None:
    with pytest.raises(ValueError):
        message_id([])
