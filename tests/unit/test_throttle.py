"""Tests for server.throttle.FailureThrottle with a fake clock."""

from __future__ import annotations

import pytest

from server.throttle import FailureThrottle


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
    assert len(throttle._failures) <= 3


def test_many_keys_never_exceed_max_keys(clock):
    throttle = FailureThrottle(2, 60, clock=clock, max_keys=100)
    for i in range(10_000):
        throttle.fail(f"203.0.113.{i}")
    assert len(throttle._failures) <= 100
    throttle.fail("203.0.113.9999")            # still tracked: the newest keys stay
    assert throttle.blocked("203.0.113.9999")


def test_expired_keys_are_forgotten(throttle, clock):
    throttle.fail("alice")
    clock.advance(61)
    assert not throttle.blocked("alice")
    assert "alice" not in throttle._failures


def test_default_clock_is_monotonic():
    import time
    assert FailureThrottle(1, 1).clock is time.monotonic
