"""XMPP addresses (RFC 7622) and the string preparation they need.

RFC 7622 prepares JID parts with PRECIS (RFC 8264/8265), which the standard
library does not implement.  We approximate it with the older stringprep
profiles of RFC 6122 (Nodeprep, Nameprep, Resourceprep) built from the
:mod:`stringprep` tables, Unicode 3.2 NFKC and the RFC 3454 bidi rule.
Known differences from PRECIS: case folding turns "ß" into "ss" and final
sigma into sigma, compatibility characters such as "Ⅳ" are folded instead of
rejected, and symbols such as "♚" are allowed in localparts.  Resourceparts
additionally accept characters assigned after Unicode 3.2 (emoji nicknames),
which the 3.2-only stringprep tables would otherwise reject.
"""

from __future__ import annotations

import encodings.idna
import functools
import ipaddress
import stringprep
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["JID", "JIDError", "nodeprep", "nameprep", "resourceprep", "saslprep"]

MAX_PART_BYTES = 1023
_MAX_LABEL = 63
# Longer inputs could only shrink to a legal size through piles of ignorable
# characters; refusing them early keeps hostile input cheap.
_MAX_INPUT_CHARS = 4 * MAX_PART_BYTES
# Only short strings are cached so junk cannot evict the JIDs we route a lot.
_CACHE_SIZE = 4096
_CACHE_MAX_CHARS = 512

_LOCAL_EXTRA_PROHIBITED = frozenset("\"&'/:<>@")
_LABEL_DOTS = ("\u3002", "\uff0e", "\uff61")  # ideographic / fullwidth / halfwidth stops
_LDH = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")

_nfkc = functools.partial(unicodedata.ucd_3_2_0.normalize, "NFKC")

_Table = Callable[[str], bool]
# Prohibition tables shared by every profile (RFC 3454 appendix C, minus spaces/controls).
_BASE_PROHIBITED: tuple[_Table, ...] = (
    stringprep.in_table_c12,
    stringprep.in_table_c22,
    stringprep.in_table_c3,
    stringprep.in_table_c4,
    stringprep.in_table_c5,
    stringprep.in_table_c6,
    stringprep.in_table_c7,
    stringprep.in_table_c8,
    stringprep.in_table_c9,
)
_NODE_PROHIBITED = (stringprep.in_table_c11, stringprep.in_table_c21, *_BASE_PROHIBITED)
_RESOURCE_PROHIBITED = (stringprep.in_table_c21, *_BASE_PROHIBITED)
_NAME_PROHIBITED = _BASE_PROHIBITED
_SASL_PROHIBITED = _RESOURCE_PROHIBITED


class JIDError(ValueError):
    """An address or address part that cannot be prepared or is malformed."""


def _stringprep(
    s: str,
    *,
    what: str,
    casefold: bool,
    prohibited: tuple[_Table, ...],
    allow_unassigned: bool,
    space_to_space: bool = False,
    error: type[ValueError] = JIDError,
) -> str:
    """Run the RFC 3454 steps: map, NFKC, prohibit, bidi.

    ``allow_unassigned`` lets characters that Unicode 3.2 did not know through
    if the running Unicode database assigns them to a non-control category.
    """
    mapped = []
    for ch in s:
        if stringprep.in_table_b1(ch):
            continue
        if space_to_space and stringprep.in_table_c12(ch):
            ch = " "
        mapped.append(stringprep.map_table_b2(ch) if casefold else ch)
    out = _nfkc("".join(mapped))

    for ch in out:
        if any(table(ch) for table in prohibited):
            raise error(f"{what} contains prohibited character U+{ord(ch):04X}")
        if stringprep.in_table_a1(ch) and not (
            allow_unassigned and not unicodedata.category(ch).startswith("C")
        ):
            raise error(f"{what} contains unassigned character U+{ord(ch):04X}")

    if any(stringprep.in_table_d1(ch) for ch in out):
        if any(stringprep.in_table_d2(ch) for ch in out):
            raise error(f"{what} mixes right-to-left and left-to-right text")
        if not (stringprep.in_table_d1(out[0]) and stringprep.in_table_d1(out[-1])):
            raise error(f"{what} must start and end with right-to-left characters")
    return out


def _cached(fn: Callable[[str], object]) -> Callable:
    """lru_cache ``fn`` for short arguments only."""
    cached = functools.lru_cache(maxsize=_CACHE_SIZE)(fn)

    @functools.wraps(fn)
    def wrapper(s: str):
        if len(s) > _CACHE_MAX_CHARS:
            return fn(s)
        return cached(s)

    wrapper.cache_info = cached.cache_info  # type: ignore[attr-defined]
    wrapper.cache_clear = cached.cache_clear  # type: ignore[attr-defined]
    return wrapper


def _check_size(s: str, what: str) -> None:
    if not s:
        raise JIDError(f"{what} is empty")
    if len(s.encode("utf-8")) > MAX_PART_BYTES:
        raise JIDError(f"{what} is longer than {MAX_PART_BYTES} bytes")


def _check_input(s: str, what: str) -> None:
    if not s:
        raise JIDError(f"{what} is empty")
    if len(s) > _MAX_INPUT_CHARS:
        raise JIDError(f"{what} is longer than {MAX_PART_BYTES} bytes")


@_cached
def nodeprep(s: str) -> str:
    """Prepare a localpart (also used for account usernames)."""
    _check_input(s, "localpart")
    out = _stringprep(
        s,
        what="localpart",
        casefold=True,
        prohibited=_NODE_PROHIBITED,
        allow_unassigned=False,
    )
    bad = _LOCAL_EXTRA_PROHIBITED.intersection(out)
    if bad:
        raise JIDError(f"localpart contains prohibited character {min(bad)!r}")
    _check_size(out, "localpart")
    return out


@_cached
def resourceprep(s: str) -> str:
    """Prepare a resourcepart: case and spaces are kept, controls are not."""
    _check_input(s, "resourcepart")
    out = _stringprep(
        s,
        what="resourcepart",
        casefold=False,
        prohibited=_RESOURCE_PROHIBITED,
        allow_unassigned=True,
    )
    _check_size(out, "resourcepart")
    return out


def saslprep(s: str, *, allow_unassigned: bool = True) -> str:
    """Prepare a SASL username or password (RFC 4013).

    Unassigned code points are allowed by default ("query" semantics, as
    RFC 5802 uses it) so passwords typed with newer characters still work.
    Raises ValueError on prohibited output.
    """
    return _stringprep(
        s,
        what="string",
        casefold=False,
        prohibited=_SASL_PROHIBITED,
        allow_unassigned=allow_unassigned,
        space_to_space=True,
        error=ValueError,
    )


def _ipv6_literal(s: str) -> str:
    inner = s[1:-1]
    if "%" in inner:  # zone ids are not part of the RFC 3986 IP-literal
        raise JIDError("domainpart IPv6 literal may not carry a zone id")
    try:
        return f"[{ipaddress.IPv6Address(inner).compressed}]"
    except ValueError:
        raise JIDError(f"domainpart is not a valid IPv6 literal: {s!r}") from None


def _a_label_to_u(label: str) -> str:
    """Turn 'xn--' labels into Unicode so both spellings compare equal."""
    try:
        return encodings.idna.ToUnicode(label)
    except UnicodeError:
        raise JIDError(f"domainpart has an invalid IDNA label {label!r}") from None


def _prep_label(label: str) -> str:
    if not label:
        raise JIDError("domainpart has an empty label")
    if label.isascii():
        label = label.lower()
        if label.startswith("xn--"):
            label = _a_label_to_u(label)
    if not label.isascii():
        label = _stringprep(
            label,
            what="domainpart",
            casefold=True,
            prohibited=_NAME_PROHIBITED,
            allow_unassigned=False,
        )
        if not label:
            raise JIDError("domainpart has an empty label")
    if any(ch.isascii() and ch not in _LDH for ch in label):
        raise JIDError(f"domainpart label {label!r} has characters other than letters, digits and '-'")
    if label.startswith("-") or label.endswith("-"):
        raise JIDError(f"domainpart label {label!r} starts or ends with '-'")
    if label.isascii():
        if len(label) > _MAX_LABEL:
            raise JIDError(f"domainpart label is longer than {_MAX_LABEL} characters")
    else:
        try:
            encodings.idna.ToASCII(label)
        except UnicodeError:
            raise JIDError(f"domainpart label {label!r} is not a valid IDNA label") from None
    return label


@_cached
def nameprep(s: str) -> str:
    """Prepare a domainpart: a lowercased DNS name, IPv4 address or [IPv6] literal."""
    _check_input(s, "domainpart")
    if s.startswith("[") and s.endswith("]"):
        return _ipv6_literal(s)
    for dot in _LABEL_DOTS:
        s = s.replace(dot, ".")
    if s.endswith("."):  # RFC 7622 §3.2: a final dot is stripped
        s = s[:-1]
    if not s:
        raise JIDError("domainpart is empty")
    labels = [_prep_label(label) for label in s.split(".")]
    domain = ".".join(labels)
    _check_size(domain, "domainpart")
    if all(label.isdigit() for label in labels):
        try:
            ipaddress.IPv4Address(domain)
        except ValueError:
            raise JIDError(f"domainpart is not a valid IPv4 address: {domain!r}") from None
    return domain


@dataclass(frozen=True, slots=True)
class JID:
    """A prepared XMPP address; equal JIDs compare and hash equal.

    Constructing one directly prepares the parts as well, so
    ``JID("Juliet", "Example.com")`` equals ``JID.parse("juliet@example.com")``.
    """

    local: str | None
    domain: str
    resource: str | None = None

    def __post_init__(self) -> None:
        if self.local is not None:
            object.__setattr__(self, "local", nodeprep(self.local))
        object.__setattr__(self, "domain", nameprep(self.domain))
        if self.resource is not None:
            object.__setattr__(self, "resource", resourceprep(self.resource))

    @classmethod
    def _prepared(cls, local: str | None, domain: str, resource: str | None) -> JID:
        """Build from parts that are already prepared (skips __post_init__)."""
        jid = object.__new__(cls)
        object.__setattr__(jid, "local", local)
        object.__setattr__(jid, "domain", domain)
        object.__setattr__(jid, "resource", resource)
        return jid

    @classmethod
    def parse(cls, text: str) -> JID:
        """Split per RFC 7622 §3.1 and prepare each part; raise JIDError."""
        return _parse(text)

    @property
    def bare(self) -> JID:
        if self.resource is None:
            return self
        return JID._prepared(self.local, self.domain, None)

    @property
    def is_bare(self) -> bool:
        return self.resource is None

    @property
    def is_domain(self) -> bool:
        return self.local is None and self.resource is None

    def with_resource(self, resource: str) -> JID:
        return JID._prepared(self.local, self.domain, resourceprep(resource))

    def __str__(self) -> str:
        text = self.domain
        if self.local is not None:
            text = f"{self.local}@{text}"
        if self.resource is not None:
            text = f"{text}/{self.resource}"
        return text


@_cached
def _parse(text: str) -> JID:
    # Resource first: everything after the first '/' is resource, even '@';
    # then the localpart ends at the first '@' (a later one fails the domain).
    rest, slash, resource = text.partition("/")
    if slash and not resource:
        raise JIDError("resourcepart is empty")
    local, at, domain = rest.partition("@")
    if not at:
        local, domain = None, rest
    elif not local:
        raise JIDError("localpart is empty")
    return JID._prepared(
        None if local is None else nodeprep(local),
        nameprep(domain),
        resourceprep(resource) if slash else None,
    )
