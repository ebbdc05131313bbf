"""Stream and stanza error conditions as data (RFC 6120 §4.9.3 and §8.3.3).

Code raises :class:`StreamError` when the whole stream must end and
:class:`StanzaError` when one stanza gets an error reply; the connection layer
turns them into XML with the builders in ``stanza.py``.
"""

from __future__ import annotations

from .namespaces import STANZA_ERRORS_NS, STREAM_ERRORS_NS, STREAMS_NS  # noqa: F401

#: RFC 6120 §4.9.3 — every defined stream error condition.
STREAM_CONDITIONS = frozenset({
    "bad-format", "bad-namespace-prefix", "conflict", "connection-timeout",
    "host-gone", "host-unknown", "improper-addressing", "internal-server-error",
    "invalid-from", "invalid-namespace", "invalid-xml", "not-authorized",
    "not-well-formed", "policy-violation", "remote-connection-failed", "reset",
    "resource-constraint", "restricted-xml", "see-other-host", "system-shutdown",
    "undefined-condition", "unsupported-encoding", "unsupported-feature",
    "unsupported-stanza-type", "unsupported-version",
})

#: RFC 6120 §8.3.3 — stanza error condition → its usual error type.
STANZA_CONDITIONS = {
    "bad-request": "modify",
    "conflict": "cancel",
    "feature-not-implemented": "cancel",
    "forbidden": "auth",
    "gone": "cancel",
    "internal-server-error": "cancel",
    "item-not-found": "cancel",
    "jid-malformed": "modify",
    "not-acceptable": "modify",
    "not-allowed": "cancel",
    "not-authorized": "auth",
    "policy-violation": "modify",
    "recipient-unavailable": "wait",
    "redirect": "modify",
    "registration-required": "auth",
    "remote-server-not-found": "cancel",
    "remote-server-timeout": "wait",
    "resource-constraint": "wait",
    "service-unavailable": "cancel",
    "subscription-required": "auth",
    "undefined-condition": "cancel",
    "unexpected-request": "wait",
}

STANZA_ERROR_TYPES = frozenset({"auth", "cancel", "continue", "modify", "wait"})


class StreamError(Exception):
    """The stream must be closed with ``<stream:error>`` carrying *condition*."""

    def __init__(self, condition: str, text: str | None = None):
        if condition not in STREAM_CONDITIONS:
            raise ValueError(f"unknown stream error condition {condition!r}")
        super().__init__(f"{condition}: {text}" if text else condition)
        self.condition = condition
        self.text = text
        #: events the parser completed before the error (see StreamParser.feed)
        self.events: list = []


class StanzaError(Exception):
    """One stanza fails; the sender gets ``type='error'`` with *condition*.

    ``value`` carries the payload of conditions that have one (``gone`` and
    ``redirect`` hold a URI, RFC 6120 §8.3.3.5 and .14).
    """

    def __init__(self, condition: str, text: str | None = None, *,
                 type: str | None = None, value: str | None = None,
                 extra=None):
        if condition not in STANZA_CONDITIONS:
            raise ValueError(f"unknown stanza error condition {condition!r}")
        error_type = type or STANZA_CONDITIONS[condition]
        if error_type not in STANZA_ERROR_TYPES:
            raise ValueError(f"unknown stanza error type {error_type!r}")
        super().__init__(f"{condition}: {text}" if text else condition)
        self.condition = condition
        self.text = text
        self.type = error_type
        self.value = value
        #: an optional application-specific condition element (lxml element)
        self.extra = extra
