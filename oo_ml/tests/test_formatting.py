"""Numbers and times as the admin writes them."""

from __future__ import annotations

import datetime as dt

import pytest

from oo_ml.formatting import ago, short_id, significant, total


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.9500000000000001, "0.95"),
        (-0.49729781959, "-0.4973"),
        (0.0, "0"),
        (1.0, "1"),
        (2.9123e-05, "0.00002912"),
        (12345.6, "12,346"),
        (None, "—"),
    ],
)
def test_four_significant_digits(value, text):
    assert significant(value) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1.7000000000000006, "1.7"),
        (-5.500000000000002, "-5.5"),
        (0.0, "0"),
        (12.0, "12"),
    ],
)
def test_a_sum_of_rewards_to_four_decimals_at_most(value, text):
    assert total(value) == text


def test_under_a_minute_is_just_now_and_later_says_how_long():
    now = dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.UTC)
    assert ago(now - dt.timedelta(seconds=59), now) == "just now"
    assert ago(now - dt.timedelta(minutes=3), now) == "3\xa0minutes ago"


def test_a_short_id_is_its_random_end():
    assert (
        short_id("01a241e3-8fb8-7969-b84f-ded794e92370")
        == "…e92370"[:1] + "d794e92370"[-8:]
    )
    assert short_id("click-98") == "click-98"
