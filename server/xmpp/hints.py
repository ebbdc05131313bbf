"""Should a message that found no resource be kept for later? The decision,
without I/O, from the message alone. "No resource" is RFC 6121 §8.5.2.2.1
(none available) and §8.5.2.1.1 (only negative priorities); for ``normal``
and ``chat`` both let the server either store the message offline or return
``<service-unavailable/>``.

The rules, in the order they are applied:

1. ``error`` is never stored (XEP-0160 §3, "Handling of Message Types");
   hints inside an error are ignored (XEP-0334 §5: an error often carries the
   original stanza's payload, hints included).
2. ``groupchat`` is never stored: a user without a resource is in no room
   (XEP-0160 §3). The sender gets an error (RFC 6121 §8.5.2.2.1).
3. ``<no-store/>`` (XEP-0334 §4.2): not even temporarily, "e.g. for later
   delivery to an offline client". When both ``<no-store/>`` and
   ``<store/>`` are present, ``<no-store/>`` wins (the sender asked for
   less to be kept; Prosody's MAM checks it first too).
   ``<no-permanent-store/>`` (§4.1) is *not* a reason to refuse: it rules out
   archives and logs, and §3.3 names offline storage as the temporary
   storage such a message may still get.
4. ``<store/>`` (§4.4): "SHOULD be stored" — also what would not be kept
   otherwise (§2: "a message that would not have been stored under normal
   conditions"), a ``headline`` or a message of chat states only. ejabberd
   stores a headline with ``<store/>`` as well.
5. ``headline`` is not stored (RFC 6121 §8.5.2.2.1: silently ignored;
   XEP-0160 §3: time-sensitive).
6. ``normal`` and ``chat`` are stored (RFC 6121 §8.5.2.2.1, XEP-0160 §3),
   except a message with nothing in it but chat states (XEP-0085 §5.8:
   servers "SHOULD NOT store them offline"; XEP-0160 §3 says the same for
   ``chat``) and what travels with them: hints, XEP-0359 ids and
   ``<thread/>``. Everything else is content worth keeping — a body, a
   subject, an encrypted payload, and also XEP-0184 receipts and XEP-0333
   markers: neither XEP asks servers not to store them, and both Prosody (its
   MAM's ``should_store``: "if it's important enough to ask for a receipt
   then it's important enough to archive and the same applies to the
   receipt") and ejabberd (``store_empty_body = unless_chat_state``) keep
   them, so a sender who was offline still learns its messages arrived.

What is not stored is either dropped (``DROP``: nothing a user would miss —
a standalone chat state, a headline, an error) or refused (``REFUSE``: a
``normal``/``chat`` message with content that the sender asked not to be
stored, or a ``groupchat``): the other choice RFC 6121 gives for a
``normal``/``chat`` message that is not stored is ``<service-unavailable/>``,
and the sender learns it did not arrive (ejabberd answers a ``<no-store/>``
message to an offline user the same way). Dropping a standalone chat state
without an error is the exception XEP-0085 §5.8 and XEP-0160 §3 make.
"""

from __future__ import annotations

import enum

from .namespaces import CHATSTATES_NS, CLIENT_NS, HINTS_NS, STANZA_ID_NS

NO_STORE = f"{{{HINTS_NS}}}no-store"
NO_PERMANENT_STORE = f"{{{HINTS_NS}}}no-permanent-store"
STORE = f"{{{HINTS_NS}}}store"
NO_COPY = f"{{{HINTS_NS}}}no-copy"

#: namespaces of what may come with a chat state without making it content
_ENVELOPE_NAMESPACES = (CHATSTATES_NS, HINTS_NS, STANZA_ID_NS)
_THREAD = f"{{{CLIENT_NS}}}thread"


class OfflineAction(enum.Enum):
    """What to do with a message no resource took."""
    STORE = "store"
    DROP = "drop"             # not stored, silently
    REFUSE = "refuse"         # not stored, the sender gets <service-unavailable/>


def message_type(stanza) -> str:
    """RFC 6121 §5.2.2: an absent or unknown type is ``normal``."""
    kind = stanza.get("type", "normal")
    return kind if kind in ("chat", "groupchat", "headline", "error") else "normal"


def hints(stanza) -> set[str]:
    """The XEP-0334 hints a message carries, as ``{urn:xmpp:hints}name`` tags
    (none for an error, §5)."""
    if stanza.get("type") == "error":
        return set()
    return {child.tag for child in stanza
            if isinstance(child.tag, str) and child.tag.startswith(f"{{{HINTS_NS}}}")}


def has_content(stanza) -> bool:
    """True if the message carries more than chat states, hints, XEP-0359 ids
    and a thread: something a user would miss if it were lost."""
    for child in stanza:
        if not isinstance(child.tag, str) or child.tag == _THREAD:
            continue
        if not child.tag.startswith(tuple(f"{{{ns}}}" for ns in _ENVELOPE_NAMESPACES)):
            return True
    return False


def offline_decision(stanza) -> OfflineAction:
    """Store, drop or refuse a message that found no resource (the rules in
    the module docstring)."""
    kind = message_type(stanza)
    if kind == "error":
        return OfflineAction.DROP
    if kind == "groupchat":
        return OfflineAction.REFUSE
    given = hints(stanza)
    content = has_content(stanza)
    if NO_STORE in given:
        return OfflineAction.REFUSE if content and kind != "headline" else OfflineAction.DROP
    if STORE in given:
        return OfflineAction.STORE
    if kind == "headline" or not content:
        return OfflineAction.DROP
    return OfflineAction.STORE
