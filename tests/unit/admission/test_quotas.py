"""Quotas as data and the pure check: hard refusals with Retry-After to the period's end,
hard and soft clamps of max_tokens, the soft floor, alerts, and several quotas at once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from tenantserve.admission.quotas import (
    SOFT_FLOOR_TOKENS,
    Enforcement,
    Quota,
    QuotaAllowed,
    QuotaExceeded,
    QuotaMetric,
    QuotaPeriod,
    QuotaUsage,
    SoftAlertFilter,
    SoftQuotaAlert,
    check_quotas,
    parse_quotas,
    period_end,
    period_key,
    seconds_until_period_end,
    threshold_alerts,
)
from tenantserve.errors import InvalidRequestError

DAY, MONTH = QuotaPeriod.DAY, QuotaPeriod.MONTH
HARD, SOFT = Enforcement.HARD, Enforcement.SOFT
REQUESTS, TOKENS = QuotaMetric.REQUESTS, QuotaMetric.TOKENS
PROMPT, COMPLETION = QuotaMetric.PROMPT_TOKENS, QuotaMetric.COMPLETION_TOKENS

# 2026-11-27 18:00 UTC: 6 h to the end of the day, 3 days 6 h to the end of the month.
NOW = datetime(2026, 11, 27, 18, 0, tzinfo=UTC)
TO_END_OF_DAY_S = 6 * 3600.0
TO_END_OF_MONTH_S = (3 * 24 + 6) * 3600.0


def quota(metric: QuotaMetric, period: QuotaPeriod, limit: int, how: Enforcement) -> Quota:
    return Quota(metric, period, limit, how)


def check(
    quotas: list[Quota], used: QuotaUsage, prompt_tokens: int = 100, max_tokens: int = 500
) -> QuotaAllowed | QuotaExceeded:
    return check_quotas(quotas, used, prompt_tokens, max_tokens, NOW)


# -- periods ---------------------------------------------------------------------------


def test_period_keys_name_the_utc_month_and_day() -> None:
    assert period_key(MONTH, NOW) == "2026-11"
    assert period_key(DAY, NOW) == "2026-11-27"
    # 00:30 on Dec 1 in UTC+2 is still Nov 30 in UTC.
    east = datetime(2026, 12, 1, 0, 30, tzinfo=timezone(timedelta(hours=2)))
    assert (period_key(MONTH, east), period_key(DAY, east)) == ("2026-11", "2026-11-30")


@pytest.mark.parametrize(
    ("now", "period", "end"),
    [
        (datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC), MONTH, datetime(2026, 12, 1, tzinfo=UTC)),
        (datetime(2026, 12, 31, 23, 0, tzinfo=UTC), MONTH, datetime(2027, 1, 1, tzinfo=UTC)),
        (datetime(2028, 2, 29, 12, 0, tzinfo=UTC), MONTH, datetime(2028, 3, 1, tzinfo=UTC)),
        (datetime(2026, 12, 1, 0, 0, tzinfo=UTC), MONTH, datetime(2027, 1, 1, tzinfo=UTC)),
        (datetime(2026, 12, 31, 23, 0, tzinfo=UTC), DAY, datetime(2027, 1, 1, tzinfo=UTC)),
        (datetime(2026, 11, 27, 0, 0, tzinfo=UTC), DAY, datetime(2026, 11, 28, tzinfo=UTC)),
    ],
)
def test_a_period_ends_at_the_next_utc_calendar_boundary(
    now: datetime, period: QuotaPeriod, end: datetime
) -> None:
    assert period_end(period, now) == end
    assert seconds_until_period_end(period, now) == (end - now).total_seconds()
    assert period_key(period, end) != period_key(period, now)
    assert period_key(period, end - timedelta(microseconds=1)) == period_key(period, now)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        period_key(DAY, datetime(2026, 11, 27))


# -- quotas as data --------------------------------------------------------------------


def test_a_quota_round_trips_through_its_dict() -> None:
    data = {"metric": "tokens", "period": "month", "limit": 1_000_000, "enforcement": "hard"}
    q = Quota.from_dict(data)
    assert q == Quota(TOKENS, MONTH, 1_000_000, HARD)
    assert q.to_dict() == data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"metric": "gpus", "period": "day", "limit": 1, "enforcement": "hard"},
            "requests, tokens, prompt_tokens, completion_tokens",
        ),
        ({"metric": "tokens", "period": "week", "limit": 1, "enforcement": "hard"}, "day, month"),
        ({"metric": "tokens", "period": "day", "limit": 1, "enforcement": "maybe"}, "hard, soft"),
        ({"metric": "tokens", "period": "day", "limit": 0, "enforcement": "hard"}, "positive"),
        ({"metric": "tokens", "period": "day", "limit": True, "enforcement": "hard"}, "positive"),
        ({"metric": "tokens", "period": "day", "limit": 1.5, "enforcement": "hard"}, "positive"),
        ({"metric": "tokens", "period": "day", "limit": "9", "enforcement": "hard"}, "positive"),
        ({"metric": "tokens", "period": "day", "limit": 1}, "missing enforcement"),
        (
            {"metric": "tokens", "period": "day", "limit": 1, "enforcement": "hard", "x": 1},
            "unknown quota field(s) x",
        ),
        ({"metric": 3, "period": "day", "limit": 1, "enforcement": "hard"}, "metric must be"),
    ],
)
def test_bad_quotas_are_refused_naming_the_choices(data: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidRequestError) as e:
        Quota.from_dict(data)
    assert message in str(e.value)


def test_a_quota_list_allows_one_quota_per_metric_and_period() -> None:
    month = {"metric": "tokens", "period": "month", "limit": 10, "enforcement": "hard"}
    day = {**month, "period": "day"}
    assert parse_quotas([month, day]) == (
        Quota(TOKENS, MONTH, 10, HARD),
        Quota(TOKENS, DAY, 10, HARD),
    )
    assert parse_quotas([]) == ()
    with pytest.raises(InvalidRequestError, match="more than one quota for tokens per month"):
        parse_quotas([month, {**month, "enforcement": "soft", "limit": 5}])
    with pytest.raises(InvalidRequestError, match="list"):
        parse_quotas(month)  # type: ignore[arg-type]


# -- hard quotas -----------------------------------------------------------------------


def test_no_quotas_allow_the_request_unchanged() -> None:
    assert check([], {}) == QuotaAllowed(max_tokens=500)


def test_a_hard_quota_already_reached_is_refused_until_the_period_ends() -> None:
    q = quota(REQUESTS, DAY, 10, HARD)
    assert check([q], {(DAY, REQUESTS): 9}) == QuotaAllowed(max_tokens=500)
    refused = check([q], {(DAY, REQUESTS): 10})
    assert refused == QuotaExceeded(q, used=10, retry_after_s=TO_END_OF_DAY_S)
    assert "10 requests per day" in refused.message


def test_a_hard_token_quota_clamps_max_tokens_to_what_is_left() -> None:
    q = quota(TOKENS, MONTH, 1000, HARD)
    # 1000 - 700 used - 100 prompt = 200 output tokens left.
    assert check([q], {(MONTH, TOKENS): 700}) == QuotaAllowed(max_tokens=200)
    # Room for more than asked: unchanged.
    assert check([q], {(MONTH, TOKENS): 100}) == QuotaAllowed(max_tokens=500)


def test_a_hard_token_quota_refuses_only_once_the_prompt_leaves_no_output_room() -> None:
    q = quota(TOKENS, MONTH, 1000, HARD)
    assert check([q], {(MONTH, TOKENS): 899}) == QuotaAllowed(max_tokens=1)
    refused = check([q], {(MONTH, TOKENS): 900})
    assert refused == QuotaExceeded(q, used=900, retry_after_s=TO_END_OF_MONTH_S)
    assert isinstance(check([q], {(MONTH, TOKENS): 5000}), QuotaExceeded)


def test_hard_prompt_and_completion_quotas_count_their_own_side() -> None:
    prompt = quota(PROMPT, DAY, 1000, HARD)
    assert check([prompt], {(DAY, PROMPT): 900}) == QuotaAllowed(max_tokens=500)
    assert isinstance(check([prompt], {(DAY, PROMPT): 901}), QuotaExceeded)
    completion = quota(COMPLETION, DAY, 1000, HARD)
    assert check([completion], {(DAY, COMPLETION): 700}) == QuotaAllowed(max_tokens=300)
    assert isinstance(check([completion], {(DAY, COMPLETION): 1000}), QuotaExceeded)


def test_usage_of_another_period_or_metric_does_not_count() -> None:
    q = quota(TOKENS, MONTH, 1000, HARD)
    used = {(DAY, TOKENS): 5000, (MONTH, REQUESTS): 5000, (MONTH, PROMPT): 5000}
    assert check([q], used) == QuotaAllowed(max_tokens=500)


# -- soft quotas -----------------------------------------------------------------------


def test_a_soft_quota_the_request_would_cross_clamps_and_alerts() -> None:
    q = quota(TOKENS, DAY, 1000, SOFT)
    result = check([q], {(DAY, TOKENS): 500})
    alert = SoftQuotaAlert(q, used=500, period_key="2026-11-27")
    assert result == QuotaAllowed(max_tokens=400, alerts=(alert,))


def test_a_soft_quota_not_crossed_neither_clamps_nor_alerts() -> None:
    q = quota(TOKENS, DAY, 1000, SOFT)
    assert check([q], {(DAY, TOKENS): 400}) == QuotaAllowed(max_tokens=500)


def test_a_soft_quota_never_clamps_below_the_floor() -> None:
    q = quota(COMPLETION, MONTH, 1000, SOFT)
    near = check([q], {(MONTH, COMPLETION): 995})
    assert isinstance(near, QuotaAllowed) and near.max_tokens == SOFT_FLOOR_TOKENS
    over = check([q], {(MONTH, COMPLETION): 5000})
    assert isinstance(over, QuotaAllowed) and over.max_tokens == SOFT_FLOOR_TOKENS
    assert [a.used for a in over.alerts] == [5000]
    # The floor never raises what the request asked for.
    small = check([q], {(MONTH, COMPLETION): 5000}, max_tokens=4)
    assert isinstance(small, QuotaAllowed) and small.max_tokens == 4


def test_soft_request_and_prompt_quotas_only_alert() -> None:
    requests = quota(REQUESTS, DAY, 10, SOFT)
    prompt = quota(PROMPT, DAY, 1000, SOFT)
    result = check([requests, prompt], {(DAY, REQUESTS): 10, (DAY, PROMPT): 950})
    assert isinstance(result, QuotaAllowed)
    assert result.max_tokens == 500
    assert [a.quota for a in result.alerts] == [requests, prompt]


# -- several quotas --------------------------------------------------------------------


def test_the_strictest_clamp_wins() -> None:
    quotas = [
        quota(TOKENS, MONTH, 10_000, HARD),  # 10000 - 9500 - 100 = 400 left
        quota(COMPLETION, DAY, 1000, HARD),  # 1000 - 750 = 250 left
    ]
    used = {(MONTH, TOKENS): 9500, (DAY, COMPLETION): 750}
    assert check(quotas, used) == QuotaAllowed(max_tokens=250)


def test_a_soft_quota_sees_the_request_as_hard_quotas_clamped_it() -> None:
    hard = quota(COMPLETION, DAY, 1000, HARD)  # 100 left
    soft = quota(TOKENS, MONTH, 10_000, SOFT)  # 10000 - 9700 - 100 = 200 left
    assert check([hard, soft], {(DAY, COMPLETION): 900, (MONTH, TOKENS): 9700}) == QuotaAllowed(
        max_tokens=100
    )
    # A soft floor above a hard clamp leaves the hard clamp.
    result = check([hard, soft], {(DAY, COMPLETION): 990, (MONTH, TOKENS): 9999})
    assert isinstance(result, QuotaAllowed)
    assert result.max_tokens == 10 and len(result.alerts) == 1


def test_any_hard_refusal_wins_and_names_the_quota_that_resets_last() -> None:
    day = quota(REQUESTS, DAY, 10, HARD)
    month = quota(TOKENS, MONTH, 1000, HARD)
    soft = quota(COMPLETION, DAY, 1, SOFT)
    used = {(DAY, REQUESTS): 10, (MONTH, TOKENS): 1000, (DAY, COMPLETION): 5}
    assert check([soft, day, month], used) == QuotaExceeded(month, 1000, TO_END_OF_MONTH_S)
    assert check([soft, day], used) == QuotaExceeded(day, 10, TO_END_OF_DAY_S)


def test_bad_request_sizes_are_a_caller_bug() -> None:
    with pytest.raises(ValueError):
        check([], {}, max_tokens=0)
    with pytest.raises(ValueError):
        check([], {}, prompt_tokens=-1)


# -- alert filter ----------------------------------------------------------------------


def test_a_soft_alert_passes_once_per_tenant_quota_and_period() -> None:
    q = quota(TOKENS, DAY, 1000, SOFT)
    other = quota(REQUESTS, DAY, 10, SOFT)
    gate = SoftAlertFilter()
    today = SoftQuotaAlert(q, 1000, "2026-11-27")
    assert gate.first_time("ten_a", today)
    assert not gate.first_time("ten_a", SoftQuotaAlert(q, 1200, "2026-11-27"))
    assert gate.first_time("ten_b", today)
    assert gate.first_time("ten_a", SoftQuotaAlert(other, 10, "2026-11-27"))
    assert gate.first_time("ten_a", SoftQuotaAlert(q, 1000, "2026-11-28"))


def test_threshold_alerts_name_the_highest_share_reached() -> None:
    now = datetime(2026, 11, 27, 12, tzinfo=UTC)
    tokens = Quota(QuotaMetric.TOKENS, QuotaPeriod.MONTH, 1000, Enforcement.HARD)
    requests = Quota(
        QuotaMetric.REQUESTS, QuotaPeriod.DAY, 10, Enforcement.SOFT, alert_at=(0.5, 0.9)
    )
    used = {tokens.usage_key: 799, requests.usage_key: 5}
    [alert] = threshold_alerts([tokens, requests], used, now)
    assert (alert.quota, alert.share, alert.used, alert.period_key) == (
        requests,
        0.5,
        5,
        "2026-11-27",
    )
    used = {tokens.usage_key: 1000, requests.usage_key: 9}
    alerts = threshold_alerts([tokens, requests], used, now)
    assert [(a.quota.metric, a.share) for a in alerts] == [
        (QuotaMetric.TOKENS, 1.0),
        (QuotaMetric.REQUESTS, 0.9),
    ]


def test_each_threshold_alerts_once_per_period() -> None:
    quota = Quota(QuotaMetric.TOKENS, QuotaPeriod.DAY, 100, Enforcement.HARD)
    seen = SoftAlertFilter()
    day1 = datetime(2026, 11, 27, tzinfo=UTC)
    [at80] = threshold_alerts([quota], {quota.usage_key: 85}, day1)
    [at100] = threshold_alerts([quota], {quota.usage_key: 100}, day1)
    assert seen.first_time("ten_a", at80) and not seen.first_time("ten_a", at80)
    assert seen.first_time("ten_a", at100) and seen.first_time("ten_b", at80)
    [next_day] = threshold_alerts([quota], {quota.usage_key: 85}, day1 + timedelta(days=1))
    assert seen.first_time("ten_a", next_day)


@pytest.mark.parametrize("alert_at", [[0.0], [1.5], [0.9, 0.8], ["x"], "0.8", [True]])
def test_bad_alert_shares_are_refused(alert_at: object) -> None:
    data = {"metric": "tokens", "period": "day", "limit": 5, "enforcement": "soft"}
    with pytest.raises(InvalidRequestError, match="alert_at"):
        Quota.from_dict({**data, "alert_at": alert_at})


def test_alert_shares_round_trip_and_the_default_is_left_out() -> None:
    data = {"metric": "tokens", "period": "day", "limit": 5, "enforcement": "soft"}
    assert Quota.from_dict(data).to_dict() == data
    custom = {**data, "alert_at": [0.5, 0.75, 1.0]}
    assert Quota.from_dict(custom).to_dict() == custom
