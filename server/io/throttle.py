"""Counting events per key in time: failed logins, registrations, verifications.

:class:`SlidingWindow` is the counter: at most *limit* events per key in any
*window* seconds. :class:`FailureThrottle` is a failure count on top of it;
:class:`LoginThrottle` combines three of them so that brute force stays
bounded while a stranger cannot lock an account's owner out (RFC 6120 §6.4.5
lets a client retry after a SASL failure; this bounds how often).
:class:`KeyedBucket` is the slow per-account pace. The XEP-0283 verification
limit (``modules/moved.py``) and the XEP-0077 registration limit
(``modules/register.py``) are sliding windows too.

Memory is bounded: a key keeps at most *limit* time stamps, and keys whose
stamps have all expired are forgotten — a key when it is next looked at, the
others as new keys arrive (keys are kept in the order of their last event,
so the stale ones are at the front). *max_keys* optionally caps the number
of keys outright by forgetting the least recently active one.
"""

from __future__ import annotations

import ipaddress
import time
from array import array
from collections import OrderedDict


def address_key(ip: str) -> str:
    """The unit a per-address limit counts: an IPv4 address, or the /64 an
    IPv6 address belongs to — one subscriber is usually given a whole /64
    (RFC 6177), so counting single IPv6 addresses would give an attacker 2^64
    budgets. IPv4-mapped IPv6 addresses count as their IPv4 address."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class SlidingWindow:
    """At most *limit* events per key in any *window* seconds (*clock* in seconds).

    An event stamped *t* counts until ``clock() - t >= window``. A call costs
    at most one pass over the key's *limit* stamps.
    """

    __slots__ = ("limit", "window", "clock", "max_keys", "_stamps")

    def __init__(self, limit: int, window: float, clock=time.monotonic, *,
                 max_keys: int | None = None):
        self.limit = limit
        self.window = window
        self.clock = clock
        self.max_keys = max_keys
        #: key → its live time stamps, oldest first; keys least recently recorded first.
        #: An array of doubles, not a deque: 8 bytes a stamp instead of a deque's
        #: ~600-byte block, which mattered with 100,000 keys in each of several tables
        self._stamps: OrderedDict[str, array] = OrderedDict()

    def allow(self, key: str) -> bool:
        """Record an event for *key* and return True, unless *key* already
        has *limit* events in the window (then record nothing, return False)."""
        now = self.clock()
        stamps = self._live(key, now)
        if (len(stamps) if stamps is not None else 0) >= self.limit:
            return False
        self._append(key, stamps, now)
        return True

    def record(self, key: str) -> None:
        """Record an event for *key* whatever the count (beyond *limit*, the
        oldest stamp makes room: the count stays at *limit*)."""
        now = self.clock()
        self._append(key, self._live(key, now), now)

    def count(self, key: str) -> int:
        """Events of *key* in the window (at most *limit*)."""
        stamps = self._live(key, self.clock())
        return len(stamps) if stamps is not None else 0

    def retry_after(self, key: str) -> float:
        """Seconds until :meth:`allow` would accept *key* again (0 if now)."""
        now = self.clock()
        stamps = self._live(key, now)
        if stamps is None or len(stamps) < self.limit:
            return 0.0
        return max(0.0, stamps[-self.limit] + self.window - now)

    def forget(self, key: str) -> None:
        self._stamps.pop(key, None)

    def release(self, key: str) -> None:
        """Take back the newest event of *key* (it did not happen after all:
        e.g. a registration that failed gives its slot back)."""
        stamps = self._stamps.get(key)
        if stamps:
            stamps.pop()
            if not stamps:
                del self._stamps[key]

    def __len__(self) -> int:
        """Keys currently tracked."""
        return len(self._stamps)

    def __contains__(self, key: str) -> bool:
        return key in self._stamps

    def _live(self, key: str, now: float) -> array | None:
        stamps = self._stamps.get(key)
        if stamps is None:
            return None
        window, expired = self.window, 0
        while expired < len(stamps) and now - stamps[expired] >= window:
            expired += 1
        if expired:
            del stamps[:expired]
        if not stamps:
            del self._stamps[key]
            return None
        return stamps

    def _append(self, key: str, stamps: array | None, now: float) -> None:
        if stamps is None:
            self._sweep(now)
            if self.max_keys is not None and len(self._stamps) >= self.max_keys:
                self._stamps.popitem(last=False)          # the least recently active key
            stamps = self._stamps[key] = array("d")
        else:
            self._stamps.move_to_end(key)
        stamps.append(now)
        if len(stamps) > self.limit:
            del stamps[:len(stamps) - max(self.limit, 0)]

    def _sweep(self, now: float) -> None:
        """Forget keys whose newest stamp expired; they are at the front."""
        entries, window = self._stamps, self.window
        while entries:
            key, stamps = next(iter(entries.items()))
            if stamps and now - stamps[-1] < window:
                return
            del entries[key]


class FailureThrottle:
    """Failed logins per key (account or IP): blocked once *max_failures*
    failures fall within *window* seconds; a success clears the key."""

    def __init__(self, max_failures: int, window: float, *, clock=time.monotonic,
                 max_keys: int = 100_000):
        self.max_failures = max_failures
        self.window = window
        self.clock = clock
        self.failures = SlidingWindow(max_failures, window, clock, max_keys=max_keys)

    def blocked(self, key: str) -> bool:
        """True while *key* has used up its failures in the window."""
        count = self.failures.count(key)
        return count > 0 and count >= self.max_failures

    def retry_after(self, key: str) -> float:
        """Seconds until *key* may try again (0 if not blocked)."""
        return self.failures.retry_after(key)

    def fail(self, key: str) -> None:
        self.failures.record(key)

    def succeed(self, key: str) -> None:
        self.failures.forget(key)


class KeyedBucket:
    """A leaky bucket per key: each event adds one, the level drains at
    *capacity* per *period* seconds, and a key is full while one more event
    would take it beyond *capacity*. Over a time *t* a key takes at most
    ``capacity + capacity * t / period`` events — a pace, not a lock.

    Two floats per key (unlike a sliding window's stamp per event), so a large
    *capacity* costs no memory; at most *max_keys* keys, the least recently
    touched forgotten first, and drained keys are dropped when looked at.
    """

    def __init__(self, capacity: float, period: float, *, clock=time.monotonic,
                 max_keys: int = 100_000):
        self.capacity = float(capacity)
        self.rate = capacity / period if period > 0 else float("inf")
        self.clock = clock
        self.max_keys = max_keys
        #: key → (level, when it was last computed); least recently touched first
        self._levels: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def level(self, key: str) -> float:
        """*key*'s level now (0.0 for a key never seen or drained)."""
        now = self.clock()
        entry = self._levels.get(key)
        if entry is None:
            return 0.0
        level = max(0.0, entry[0] - (now - entry[1]) * self.rate)
        if level == 0.0:
            del self._levels[key]
        return level

    def full(self, key: str) -> bool:
        """True while one more event would overflow *key*'s bucket (a capacity
        of 0: never). Once full, it lets one event in per ``period / capacity``."""
        return self.capacity > 0 and self.level(key) > self.capacity - 1

    def add(self, key: str) -> None:
        level = self.level(key) + 1.0
        if key not in self._levels and len(self._levels) >= self.max_keys:
            self._levels.popitem(last=False)
        self._levels[key] = (min(level, self.capacity), self.clock())
        self._levels.move_to_end(key)

    def __len__(self) -> int:
        return len(self._levels)


class LoginThrottle:
    """Failed SASL logins, bounded so that nobody but the owner can shut the
    owner out.

    - per address, all accounts: *max_failures_per_ip* failures in *window*
      seconds, then that address may not try again until one expires;
    - per account and address: *max_failures* in *window*, then that address
      may not try that account (others may);
    - per account, all addresses together: a :class:`KeyedBucket` of
      *account_max_failures* draining over *account_window* seconds. While it
      is full, only addresses the account logged in from within *trust_time*
      seconds may still try; the others are refused *before* the password is
      checked, so a refusal says nothing about the password.

    A correct password from a new address is refused while the bucket is full;
    accepting it would make every refused guess a checked one, and the
    per-account bound would be gone (an attacker with many addresses could
    guess without limit). With *max_failures* / *window* below the bucket's
    drain rate, one address can never fill the bucket: an attacker needs
    several addresses to make even new addresses wait, and addresses the owner
    used before keep working.

    Every check that fails counts once, whichever the mechanism: a client that
    tries SCRAM-SHA-256 and then SCRAM-SHA-1 with one wrong password uses two.
    SCRAM never shows the server the password, so that client and an attacker
    trying two passwords look the same.

    A success clears the (account, address) failures and trusts the address;
    it does not drain the account's bucket (else an attacker's budget would
    reset at each of the owner's logins). Trust lives in memory only: after a
    restart every address starts untrusted.
    """

    def __init__(self, *, max_failures: int, window: float, max_failures_per_ip: int,
                 account_max_failures: int, account_window: float, trust_time: float,
                 clock=time.monotonic, max_keys: int = 100_000):
        self.by_address = FailureThrottle(max_failures_per_ip, window, clock=clock,
                                          max_keys=max_keys)
        self.by_account_address = FailureThrottle(max_failures, window, clock=clock,
                                                  max_keys=max_keys)
        self.by_account = KeyedBucket(account_max_failures, account_window, clock=clock,
                                      max_keys=max_keys)
        self.trusted = SlidingWindow(1, trust_time, clock, max_keys=max_keys)

    def address_refused(self, ip: str) -> bool:
        """True while *ip*'s address has used up its failures (any account)."""
        return self.by_address.blocked(address_key(ip))

    def refusal(self, account: str, ip: str) -> str | None:
        """Why *ip* may not try to log in as *account* now, or None if it may."""
        address = address_key(ip)
        if self.by_address.blocked(address):
            return f"too many failures from {address}"
        if self.by_account_address.blocked(_pair(account, address)):
            return f"too many failures for {account} from {address}"
        if self.by_account.full(account) and not self.trusted.count(_pair(account, address)):
            return f"too many failures for {account}; only known addresses may try"
        return None

    def failed(self, account: str | None, ip: str) -> None:
        address = address_key(ip)
        self.by_address.fail(address)
        if account is not None:
            self.by_account_address.fail(_pair(account, address))
            self.by_account.add(account)

    def succeeded(self, account: str, ip: str) -> None:
        pair = _pair(account, address_key(ip))
        self.by_account_address.succeed(pair)
        self.trusted.record(pair)


def _pair(account: str, address: str) -> str:
    return f"{account} {address}"       # a space: in no bare JID, nor in an address
