"""XEP-0082 DateTime: written in UTC with Z, read with any offset and fraction
(server/xmpp/timestamps.py), checked against the XEP's own examples."""

import pytest

from server.xmpp import timestamps

# XEP-0082 §3.3, example 3 ("the datetime at which man first walked on the
# moon"), in UTC and as Houston wrote it; and the same instant with a fraction
MOON = -14159025.0


@pytest.mark.parametrize("text, epoch", [
    ("1969-07-21T02:56:15Z", MOON),
    ("1969-07-20T21:56:15-05:00", MOON),
    ("1969-07-21T02:56:15.123Z", MOON + 0.123),
    ("1969-07-21T08:26:15+05:30", MOON),
    ("2025-01-02T03:00:00.123456Z", 1735786800.123456),
    ("2025-01-02T03:00:00.1234567Z", 1735786800.123456),   # beyond µs: cut off
    (" 2023-11-14T22:13:20Z ", 1700000000.0),
])
def test_parse(text, epoch):
    assert timestamps.parse(text) == pytest.approx(epoch, abs=1e-6)


@pytest.mark.parametrize("text", [
    "1969-07-21T02:56:15",          # no time zone: not the DateTime profile
    "1776-07-04",                   # the Date profile (§3.2)
    "16:00:00",                     # the Time profile (§3.4)
    "1969-07-21 02:56:15Z",
    "1969-13-21T02:56:15Z",
    "1969-07-21T02:56:15+24:00",
    "19690721T02:56:15Z",           # XEP-0091's legacy format
    "",
])
def test_parse_refuses_what_is_not_a_datetime(text):
    with pytest.raises(ValueError):
        timestamps.parse(text)


def test_format_is_utc_with_z():
    assert timestamps.format(MOON, "seconds") == "1969-07-21T02:56:15Z"
    assert timestamps.format(1700000000.123) == "2023-11-14T22:13:20.123Z"
    assert timestamps.format(1700000000) == "2023-11-14T22:13:20.000Z"


@pytest.mark.parametrize("epoch", [0.0, MOON, 1700000000.5, 1735786800.123])
def test_round_trip(epoch):
    assert timestamps.parse(timestamps.format(epoch)) == pytest.approx(epoch, abs=1e-3)
