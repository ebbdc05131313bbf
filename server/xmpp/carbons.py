"""XEP-0280 Message Carbons (version 1.0.1): which messages are copied, and
the copies themselves, as pure functions of the stanza (the I/O is in
``server/modules/carbons.py``; unit tests in ``tests/unit/test_carbons_rules.py``).

Eligibility, §6.1, the rules the server announces as
``urn:xmpp:carbons:rules:0`` (§6.2: announced, they are REQUIRED). A message
is copied unless it carries ``<private xmlns='urn:xmpp:carbons:2'/>`` or a
XEP-0334 ``<no-copy/>`` hint (§9; either one is enough, as Prosody and
ejabberd read it), and if one of these holds:

- it is of type ``chat``;
- it is of type ``normal`` and has a ``<body/>``;
- it carries an IM payload: a XEP-0184 receipt or request, a XEP-0085 chat
  state, a XEP-0333 chat marker;
- it is an ``error`` answering a message that was itself copied (the module
  remembers recent copied messages, see ``ERROR_MEMORY`` there; the payload
  of an error is never looked at, §10: a bounce need not quote the original);
- MUC rules (§6.1.1): a XEP-0249 direct invitation or a mediated invitation
  (``<x xmlns='…muc#user'><invite/></x>``) is copied.

And never: ``groupchat`` (§6.1.1, "SHOULD NOT"), a private message *from* a
MUC participant (received from a full JID with ``<x xmlns='…muc#user'/>``:
the room already sends it to every joined client), or a message that is
itself a carbon (``<sent/>``/``<received/>``: a copy of a copy). A private
message *to* a MUC participant is a chat message and is copied (§6.1.1 lets
the server limit that to the clients sharing a nick in the room; we do not
track rooms, so every carbons-enabled resource gets it).

The copy (§7, §8): ``<message from='user@domain' to='full JID of the
resource' type='same as the original'>`` with ``<received/>`` or ``<sent/>``
holding a XEP-0297 ``<forwarded/>``, which holds the original message as it
was and — XEP-0297 §3: "SHOULD add a <delay/> … the date/time that the
forwarding entity received the original stanza" — a XEP-0203 ``<delay/>``
stamped with the time the server handled it. (The XEP-0280 examples show no
delay; clients that do not look for one ignore it.)

Forged carbons (§11): a client MUST ignore carbons that do not come from its
own bare JID. The server cannot make old clients careful, but it can make
sure that only it ever hands a user something that looks like a carbon:
:func:`strip_forged` removes ``<sent/>``/``<received/>`` of the carbons
namespace from a message to a user unless it comes from that user's bare JID
(which only the user's own server can use; a client's ``from`` is always its
full JID). Prosody passes such messages on untouched.
"""

from __future__ import annotations

import copy

from . import timestamps
from .namespaces import (CARBONS_NS, CHAT_MARKERS_NS, CHATSTATES_NS, CLIENT_NS, CONFERENCE_NS,
                         DELAY_NS, FORWARD_NS, HINTS_NS, MUC_USER_NS, RECEIPTS_NS)
from .stanza import E, sub

PRIVATE = f"{{{CARBONS_NS}}}private"
NO_COPY = f"{{{HINTS_NS}}}no-copy"
SENT = f"{{{CARBONS_NS}}}sent"
RECEIVED = f"{{{CARBONS_NS}}}received"
FORWARDED = f"{{{FORWARD_NS}}}forwarded"
DELAY = f"{{{DELAY_NS}}}delay"
BODY = f"{{{CLIENT_NS}}}body"
MESSAGE = f"{{{CLIENT_NS}}}message"
MUC_USER_X = f"{{{MUC_USER_NS}}}x"
MUC_INVITE = f"{{{MUC_USER_NS}}}invite"
DIRECT_INVITE = f"{{{CONFERENCE_NS}}}x"

#: namespaces of the payloads "typically used in IM" (§6.1 rule 3)
_IM_PAYLOAD_PREFIXES = tuple(f"{{{ns}}}" for ns in (RECEIPTS_NS, CHATSTATES_NS, CHAT_MARKERS_NS))


def excluded_by_sender(stanza) -> bool:
    """§9: the sender asked for no copies (``<private/>`` or ``<no-copy/>``)."""
    return stanza.find(PRIVATE) is not None or stanza.find(NO_COPY) is not None


def is_carbon(stanza) -> bool:
    """The message is itself a carbon copy (it holds ``<sent/>`` or ``<received/>``)."""
    return stanza.find(SENT) is not None or stanza.find(RECEIVED) is not None


def eligible(stanza, *, from_muc_participant: bool = False) -> bool:
    """§6.1 for a message that is not an ``error`` (errors: see the module
    docstring). *from_muc_participant*: it came in from a full JID (the
    caller knows the direction and the address)."""
    kind = stanza.get("type", "normal")
    if kind in ("groupchat", "error") or excluded_by_sender(stanza) or is_carbon(stanza):
        return False
    muc_x = stanza.find(MUC_USER_X)
    if muc_x is not None and muc_x.find(MUC_INVITE) is not None:
        return True                     # a mediated invitation (§6.1.1)
    if from_muc_participant and muc_x is not None:
        return False                    # the room copies its PMs itself (§6.1.1)
    if kind == "chat":
        return True
    if kind not in ("normal", "headline"):
        kind = "normal"                 # RFC 6121 §5.2.2: unknown types are normal
    if kind == "normal" and stanza.find(BODY) is not None:
        return True
    if stanza.find(DIRECT_INVITE) is not None:
        return True
    return any(isinstance(child.tag, str) and child.tag.startswith(_IM_PAYLOAD_PREFIXES)
               for child in stanza)


def error_eligible(stanza) -> bool:
    """An ``error`` may be copied (if it answers a copied message) unless the
    sender asked for no copies or it is itself a carbon."""
    return not excluded_by_sender(stanza) and not is_carbon(stanza)


def wrap(stanza, direction: str, user: str, to: str, received_at: float):
    """The carbon of *stanza* for the resource *to* of *user* (a bare JID):
    *direction* is ``sent`` (§8) or ``received`` (§7)."""
    carbon = E(MESSAGE, {"from": user, "to": to, "type": stanza.get("type")})
    holder = sub(carbon, f"{{{CARBONS_NS}}}{direction}")
    forwarded = sub(holder, FORWARDED)
    sub(forwarded, DELAY, {"stamp": timestamps.format(received_at)})
    original = copy.deepcopy(stanza)
    original.tail = None
    forwarded.append(original)
    return carbon


def strip_forged(stanza) -> int:
    """Remove every ``<sent/>``/``<received/>`` of the carbons namespace
    from *stanza* (the caller decided it is not from the user's bare JID);
    returns how many were removed."""
    forged = [child for child in stanza if child.tag in (SENT, RECEIVED)]
    for child in forged:
        stanza.remove(child)
    return len(forged)
