"""Tests for the per-peer limits with a fake clock: server.io.throttle.SlidingWindow
(events per key in a sliding window), FailureThrottle on it (failed logins), and
server.io.ratelimit's TokenBucket and ConnectionCounter."""

from __future__ import annotations

import pytest

from server.io.ratelimit import ConnectionCounter, TokenBucket
from server.io.throttle import FailureThrottle, SlidingWindow


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def throttle(clock):
    return FailureThrottle(3, 60.0, clock=clock)


def test_fresh_key_is_not_blocked(throttle):
    assert not throttle.blocked("alice")
    assert throttle.retry_after("alice") == 0.0


def test_blocks_after_max_failures_within_the_window(throttle, clock):
    throttle.fail("alice")
    clock.advance(10)
    throttle.fail("alice")
    assert not throttle.blocked("alice")
    assert throttle.retry_after("alice") == 0.0
    clock.advance(10)
    throttle.fail("alice")
    assert throttle.blocked("alice")


def test_failures_spread_wider_than_the_window_do_not_block(throttle, clock):
    for _ in range(10):
        throttle.fail("alice")
        clock.advance(31)          # at most two failures inside any 60 s
        assert not throttle.blocked("alice")


def test_unblocks_after_the_window(throttle, clock):
    for _ in range(3):
        throttle.fail("alice")
    assert throttle.blocked("alice")
    clock.advance(59.9)
    assert throttle.blocked("alice")
    clock.advance(0.2)
    assert not throttle.blocked("alice")
    assert throttle.retry_after("alice") == 0.0


def test_unblocks_when_the_oldest_relevant_failure_leaves_the_window(throttle, clock):
    throttle.fail("alice")             # t=0
    clock.advance(20)
    throttle.fail("alice")             # t=20
    clock.advance(20)
    throttle.fail("alice")             # t=40 → blocked until t=60
    assert throttle.retry_after("alice") == pytest.approx(20.0)
    clock.advance(20.5)                # t=60.5: the t=0 failure has expired
    assert not throttle.blocked("alice")
    throttle.fail("alice")             # t=60.5: three within the window again
    assert throttle.blocked("alice")
    assert throttle.retry_after("alice") == pytest.approx(19.5)   # until the t=20 one expires


def test_retry_after_counts_down(throttle, clock):
    for _ in range(3):
        throttle.fail("alice")
    assert throttle.retry_after("alice") == pytest.approx(60.0)
    clock.advance(15)
    assert throttle.retry_after("alice") == pytest.approx(45.0)
    clock.advance(44)
    assert throttle.retry_after("alice") == pytest.approx(1.0)
    clock.advance(2)
    assert throttle.retry_after("alice") == 0.0


def test_more_failures_while_blocked_extend_the_block(throttle, clock):
    for _ in range(3):
        throttle.fail("alice")
    clock.advance(30)
    throttle.fail("alice")             # an attacker keeps trying
    throttle.fail("alice")
    throttle.fail("alice")
    assert throttle.retry_after("alice") == pytest.approx(60.0)
    clock.advance(31)                  # the first three are gone, the last three are not
    assert throttle.blocked("alice")
    assert throttle.retry_after("alice") == pytest.approx(29.0)


@pytest.mark.parametrize("elapsed", [0.0, 10.0, 59.0, 59.999, 60.001, 61.0, 500.0])
def test_blocked_and_retry_after_agree(throttle, clock, elapsed):
    for _ in range(3):
        throttle.fail("alice")
    clock.advance(elapsed)
    assert throttle.blocked("alice") == (throttle.retry_after("alice") > 0)


def test_blocked_and_retry_after_agree_at_the_window_edge(throttle, clock):
    for _ in range(3):
        throttle.fail("alice")
    clock.advance(60.0)
    assert throttle.blocked("alice") == (throttle.retry_after("alice") > 0)


def test_succeed_clears_the_failures(throttle, clock):
    for _ in range(3):
        throttle.fail("alice")
    assert throttle.blocked("alice")
    throttle.succeed("alice")
    assert not throttle.blocked("alice")
    assert throttle.retry_after("alice") == 0.0
    throttle.fail("alice")
    throttle.fail("alice")
    assert not throttle.blocked("alice")      # the count really restarted


def test_succeed_for_an_unknown_key_is_harmless(throttle):
    throttle.succeed("nobody")
    assert not throttle.blocked("nobody")


def test_keys_are_independent(throttle):
    for _ in range(3):
        throttle.fail("alice")
    throttle.fail("bob")
    assert throttle.blocked("alice")
    assert not throttle.blocked("bob")
    assert throttle.retry_after("bob") == 0.0
    throttle.succeed("bob")
    assert throttle.blocked("alice")
    throttle.succeed("alice")
    for _ in range(3):
        throttle.fail("bob")
    assert throttle.blocked("bob")
    assert not throttle.blocked("alice")


def test_account_and_ip_keys_do_not_collide(clock):
    throttle = FailureThrottle(2, 60, clock=clock)
    throttle.fail("alice@example.com")
    throttle.fail("192.0.2.1")
    assert not throttle.blocked("alice@example.com")
    assert not throttle.blocked("192.0.2.1")


def test_max_failures_one_blocks_immediately(clock):
    throttle = FailureThrottle(1, 5, clock=clock)
    throttle.fail("k")
    assert throttle.blocked("k")
    assert throttle.retry_after("k") == pytest.approx(5.0)


def test_max_keys_bounds_memory_and_forgets_the_oldest_key(clock):
    throttle = FailureThrottle(1, 60, clock=clock, max_keys=3)
    for key in ("a", "b", "c"):
        throttle.fail(key)
    assert all(throttle.blocked(k) for k in ("a", "b", "c"))
    throttle.fail("d")                 # a fourth key: the oldest one goes
    assert not throttle.blocked("a")
    assert all(throttle.blocked(k) for k in ("b", "c", "d"))
    assert len(throttle.failures) <= 3


def test_many_keys_never_exceed_max_keys(clock):
    throttle = FailureThrottle(2, 60, clock=clock, max_keys=100)
    for i in range(10_000):
        throttle.fail(f"203.0.113.{i}")
    assert len(throttle.failures) <= 100
    throttle.fail("203.0.113.9999")            # still tracked: the newest keys stay
    assert throttle.blocked("203.0.113.9999")


def test_expired_keys_are_forgotten(throttle, clock):
    throttle.fail("alice")
    clock.advance(61)
    assert not throttle.blocked("alice")
    assert "alice" not in throttle.failures


def test_default_clock_is_monotonic():
    import time
    assert FailureThrottle(1, 1).clock is time.monotonic


# -- TokenBucket: stanzas per second ---------------------------------------------------

@pytest.fixture
def bucket(clock):
    return TokenBucket(10.0, 5, clock=clock)          # 10/s, 5 at once


def test_a_full_bucket_lets_the_burst_through_without_waiting(bucket):
    assert [bucket.take() for _ in range(5)] == [0.0] * 5


def test_beyond_the_burst_each_token_costs_one_interval(bucket):
    for _ in range(5):
        bucket.take()
    assert bucket.take() == pytest.approx(0.1)        # the 6th: wait 1/rate
    assert bucket.take() == pytest.approx(0.2)        # a caller that did not wait owes more


def test_waiting_as_told_gives_exactly_the_rate(bucket, clock):
    for _ in range(5):
        bucket.take()
    taken = 0
    while clock.now < 1010.0:                         # ten seconds of a flood
        clock.advance(bucket.take())
        taken += 1
    assert taken == pytest.approx(100, abs=1)         # 10/s, nothing more


def test_tokens_refill_with_time_but_never_beyond_the_burst(bucket, clock):
    for _ in range(5):
        bucket.take()
    clock.advance(0.301)                              # three tokens earned
    assert [bucket.take() for _ in range(3)] == [0.0] * 3
    assert bucket.take() > 0
    clock.advance(3600)                               # an hour idle: still only 5 at once
    assert [bucket.take() for _ in range(5)] == [0.0] * 5
    assert bucket.take() == pytest.approx(0.1)


def test_a_slow_sender_never_waits(bucket, clock):
    for _ in range(1000):
        assert bucket.take() == 0.0
        clock.advance(0.1)                            # exactly the rate


def test_burst_of_one_is_a_plain_rate(clock):
    bucket = TokenBucket(2.0, 1, clock=clock)
    assert bucket.take() == 0.0
    assert bucket.take() == pytest.approx(0.5)


@pytest.mark.parametrize("rate,burst", [(0, 5), (-1, 5), (10, 0), (10, 0.5)])
def test_a_bucket_needs_a_positive_rate_and_a_whole_stanza(rate, burst):
    with pytest.raises(ValueError):
        TokenBucket(rate, burst)


# -- ConnectionCounter: live connections per address -----------------------------------

def test_connections_beyond_the_limit_are_refused_per_address():
    counter = ConnectionCounter(2)
    assert counter.open("192.0.2.1") and counter.open("192.0.2.1")
    assert not counter.open("192.0.2.1")
    assert counter.open("192.0.2.2")                 # another address is not affected
    assert counter.count("192.0.2.1") == 2


def test_a_refused_connection_is_not_counted_and_closing_frees_a_place():
    counter = ConnectionCounter(1)
    assert counter.open("a")
    assert not counter.open("a")
    assert not counter.open("a")
    counter.close("a")                               # the one that was let in
    assert counter.count("a") == 0
    assert counter.open("a")


def test_addresses_without_connections_are_forgotten():
    counter = ConnectionCounter(5)
    for i in range(100):
        counter.open(f"198.51.100.{i}")
    for i in range(100):
        counter.close(f"198.51.100.{i}")
    assert len(counter) == 0


def test_limit_zero_means_no_limit():
    counter = ConnectionCounter(0)
    assert all(counter.open("a") for _ in range(10_000))
    assert counter.count("a") == 10_000


# -- SlidingWindow: the counter under FailureThrottle and XEP-0283's limit -----------------

@pytest.fixture
def window(clock):
    return SlidingWindow(3, 60.0, clock)


def test_window_allows_up_to_the_limit_then_refuses(window):
    assert [window.allow("k") for _ in range(5)] == [True, True, True, False, False]
    assert window.count("k") == 3                  # refusals are not recorded


def test_window_slides_one_event_at_a_time(window, clock):
    for _ in range(3):
        assert window.allow("k")
        clock.advance(10)                          # events at 0, 10, 20
    assert not window.allow("k")                   # t=30
    clock.advance(29.5)
    assert not window.allow("k")                   # t=59.5: the event at 0 is still in
    clock.advance(0.5)
    assert window.allow("k")                       # t=60: 60 s after it, it has left
    assert not window.allow("k")
    clock.advance(10)
    assert window.allow("k")                       # t=70: the event at 10 has left


def test_window_an_event_counts_for_exactly_window_seconds(clock):
    """An event at t stops counting at t + window (moved.py's _Limiter rule:
    ``now - stamp >= 60`` has expired)."""
    w = SlidingWindow(1, 60, clock)
    assert w.allow("k")
    clock.advance(59.5)
    assert not w.allow("k")
    assert w.retry_after("k") == pytest.approx(0.5)
    clock.advance(0.5)
    assert w.retry_after("k") == 0.0
    assert w.allow("k")


def test_window_keys_are_independent(window):
    for _ in range(3):
        window.allow("a")
    assert not window.allow("a")
    assert window.allow("b")


def test_window_limit_zero_allows_nothing(clock):
    w = SlidingWindow(0, 60, clock)
    assert not w.allow("k")
    assert len(w) == 0


def test_window_record_counts_past_refusals_but_keeps_at_most_limit_stamps(window, clock):
    for _ in range(10):
        window.record("k")
        clock.advance(1)
    assert window.count("k") == 3
    assert not window.allow("k")
    assert window.retry_after("k") == pytest.approx(60 - 3)   # the third newest, 3 s ago


def test_window_forgets_a_key_whose_events_expired(window, clock):
    window.allow("k")
    clock.advance(60)
    assert window.count("k") == 0
    assert "k" not in window and len(window) == 0


def test_window_forgets_expired_keys_nobody_asks_about_again(window, clock):
    """Memory is bounded by the keys active within one window, even for
    keys that never come back: new keys sweep the stale ones away."""
    for i in range(1000):
        window.allow(f"203.0.113.{i}")
        clock.advance(1)
    assert len(window) <= 61
    assert window.count("203.0.113.999") == 1


def test_window_sweep_keeps_keys_with_live_events(window, clock):
    window.allow("old")
    clock.advance(30)
    window.allow("recent")
    window.allow("old")                            # now the most recently active key
    clock.advance(40)                              # old's first event expired, its second not
    window.allow("new")
    assert "old" in window and "recent" in window and window.count("old") == 1
    clock.advance(30)                              # t=100: recent (30) and old (30) expired
    window.allow("newest")
    assert "old" not in window and "recent" not in window
    assert "new" in window and "newest" in window


def test_window_max_keys_forgets_the_least_recently_active(clock):
    w = SlidingWindow(1, 60, clock, max_keys=2)
    w.allow("a")
    w.allow("b")
    w.allow("c")
    assert "a" not in w and len(w) == 2
    assert not w.allow("b") and not w.allow("c")


def test_window_no_max_keys_by_default(clock):
    w = SlidingWindow(1, 60, clock)
    for i in range(5000):
        w.allow(str(i))
    assert len(w) == 5000


class _ReferenceLimiter:
    """The semantics of server/modules/moved.py's _Limiter (at most
    per_minute in any sliding 60 s), restated with a fake clock."""

    def __init__(self, per_minute, clock):
        self.per_minute, self.clock, self.stamps = per_minute, clock, {}

    def allow(self, key):
        now = self.clock()
        recent = [t for t in self.stamps.get(key, []) if now - t < 60]
        self.stamps[key] = recent
        if len(recent) >= self.per_minute:
            return False
        recent.append(now)
        return True


@pytest.mark.parametrize("per_minute", [1, 2, 5])
def test_window_replaces_the_xep0283_limiter_exactly(clock, per_minute):
    """``SlidingWindow(per_minute, 60).allow(str(old_jid))`` answers exactly
    as ``_Limiter(per_minute).allow(...)`` over a seeded random schedule."""
    import random
    rnd = random.Random(283)
    ours, theirs = SlidingWindow(per_minute, 60, clock), _ReferenceLimiter(per_minute, clock)
    for _ in range(3000):
        clock.advance(rnd.choice((0, 0, 0.5, 1, 7, 29.5, 30, 59.999, 60, 61)))
        key = rnd.choice(("romeo@a.test", "juliet@b.test", "nurse@c.test"))
        assert ours.allow(key) == theirs.allow(key)


def test_window_default_clock_is_monotonic():
    import time
    assert SlidingWindow(1, 1).clock is time.monotonic


# -- LoginThrottle: no lockout by strangers, a bounded number of guesses ------------------------

from server.config import AuthConfig                                       # noqa: E402
from server.io.throttle import KeyedBucket, LoginThrottle, address_key      # noqa: E402


def default_login_throttle(clock) -> LoginThrottle:
    """The throttle with the defaults documented in conf/xferd.toml."""
    a = AuthConfig()
    return LoginThrottle(max_failures=a.max_failures, window=a.failure_window,
                         max_failures_per_ip=a.max_failures_per_ip,
                         account_max_failures=a.account_max_failures,
                         account_window=a.account_failure_window,
                         trust_time=a.trusted_address_time, clock=clock)


def guess_for(throttle, clock, seconds: int, address_of) -> int:
    """An attacker trying one wrong password on 'victim' every second from
    ``address_of(second)``; returns how many guesses were checked (the others
    were refused before any check)."""
    checked = 0
    for second in range(seconds):
        address = address_of(second)
        if throttle.refusal("victim", address) is None:
            throttle.failed("victim", address)
            checked += 1
        clock.advance(1)
    return checked


def test_one_address_gets_120_guesses_an_hour_and_locks_nobody_out(clock):
    """Defaults: 10 failures per account and address in 300 s → 120 an hour;
    the per-account bucket (150 an hour) never fills, so the owner, from any
    other address, is never refused."""
    throttle = default_login_throttle(clock)
    for hour in range(3):
        assert guess_for(throttle, clock, 3600, lambda s: "198.51.100.7") == 120
        assert throttle.refusal("victim", "203.0.113.1") is None


def test_many_addresses_get_at_most_300_guesses_the_first_hour_then_150(clock):
    """Defaults: a fresh address per guess is limited only by the account's
    bucket — 150 at once, then 150 an hour (one per 24 s)."""
    throttle = default_login_throttle(clock)
    first = guess_for(throttle, clock, 3600, lambda s: f"10.{s // 65536}.{s // 256 % 256}.{s % 256}")
    second = guess_for(throttle, clock, 3600, lambda s: f"11.{s // 65536}.{s // 256 % 256}.{s % 256}")
    assert 150 <= first <= 300
    assert 149 <= second <= 151


def test_a_full_bucket_still_admits_the_owner_from_a_known_address(clock):
    throttle = LoginThrottle(max_failures=3, window=300, max_failures_per_ip=100,
                             account_max_failures=4, account_window=3600,
                             trust_time=86400, clock=clock)
    throttle.succeeded("victim", "192.0.2.10")             # the owner's usual address
    for n in range(4):
        throttle.failed("victim", f"198.51.100.{n}")
    assert throttle.refusal("victim", "198.51.100.200") == \
        "too many failures for victim; only known addresses may try"
    assert throttle.refusal("victim", "192.0.2.10") is None
    assert throttle.refusal("someone-else", "198.51.100.200") is None
    throttle.succeeded("victim", "192.0.2.10")             # a login does not refill the budget
    assert throttle.refusal("victim", "198.51.100.200") is not None
    clock.advance(900)                                     # one more every 3600 / 4 s
    assert throttle.refusal("victim", "198.51.100.200") is None
    clock.advance(86400)                                   # trust expires
    for n in range(4):
        throttle.failed("victim", f"198.51.100.{n}")
    assert throttle.refusal("victim", "192.0.2.10") is not None


def test_a_success_clears_the_address_failures_of_that_account_only(clock):
    throttle = LoginThrottle(max_failures=2, window=300, max_failures_per_ip=3,
                             account_max_failures=100, account_window=3600,
                             trust_time=86400, clock=clock)
    throttle.failed("alice", "192.0.2.1")
    throttle.failed("alice", "192.0.2.1")
    assert throttle.refusal("alice", "192.0.2.1") == "too many failures for alice from 192.0.2.1"
    assert throttle.refusal("bob", "192.0.2.1") is None
    throttle.failed("bob", "192.0.2.1")                    # the address's third failure
    assert throttle.address_refused("192.0.2.1")
    assert throttle.refusal("bob", "192.0.2.1") == "too many failures from 192.0.2.1"


def test_ipv6_addresses_count_per_64():
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::2") \
        == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert address_key("192.0.2.7") == "192.0.2.7"
    assert address_key("not an address") == "not an address"


def test_login_throttle_memory_is_bounded(clock):
    throttle = LoginThrottle(max_failures=5, window=300, max_failures_per_ip=20,
                             account_max_failures=150, account_window=3600,
                             trust_time=86400, clock=clock, max_keys=100)
    for n in range(5000):
        throttle.failed(f"user{n}", f"10.0.{n // 256 % 256}.{n % 256}")
        throttle.succeeded(f"user{n}", f"10.1.{n // 256 % 256}.{n % 256}")
    assert len(throttle.by_account) <= 100
    assert len(throttle.by_account_address.failures) <= 100
    assert len(throttle.by_address.failures) <= 100
    assert len(throttle.trusted) <= 100


def test_keyed_bucket_is_a_pace_not_a_lock(clock):
    bucket = KeyedBucket(3, 60, clock=clock)
    for _ in range(3):
        assert not bucket.full("k")
        bucket.add("k")
    assert bucket.full("k")
    clock.advance(19)
    assert bucket.full("k")
    clock.advance(1.5)                 # one drains every 20 s
    assert not bucket.full("k")
    clock.advance(60)
    assert bucket.level("k") == 0.0 and len(bucket) == 0
    assert not KeyedBucket(0, 60, clock=clock).full("k")     # 0: no limit


def test_release_gives_back_the_newest_event(clock):
    window = SlidingWindow(1, 600, clock)
    assert window.allow("192.0.2.1")
    window.release("192.0.2.1")
    assert window.allow("192.0.2.1")
    assert not window.allow("192.0.2.1")
    window.release("192.0.2.1")
    assert "192.0.2.1" not in window
