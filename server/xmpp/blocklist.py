"""XEP-0191 Blocking Command §6 (JID matching, as XEP-0016 §2.1 defines it),
said once: which items of a blocklist cover an address.

An item covers:

* ``user@domain/resource`` — that resource only;
* ``user@domain`` — the bare JID and every resource of it;
* ``domain/resource`` — that resource of the domain, and of every account
  at the domain (XEP-0016 §2.1);
* ``domain`` — the domain and every address at it (not its subdomains).

A blocklist is any container of prepared JID strings (``str(JID)``).
Who is never blocked (the user's own resources, the user's own server) is
the blocking module's policy, not matching.
"""

from __future__ import annotations

from typing import Collection

from .jid import JID, JIDError


def patterns(jid: JID) -> list[str]:
    """The blocklist items that cover *jid*, most specific first."""
    found = []
    if jid.local is not None:
        if jid.resource is not None:
            found.append(str(jid))
        found.append(f"{jid.local}@{jid.domain}")
    if jid.resource is not None:
        found.append(f"{jid.domain}/{jid.resource}")
    found.append(jid.domain)
    return found


def is_blocked(blocklist: Collection[str], jid: JID) -> bool:
    """Does an item of *blocklist* cover *jid*? (Most users block nobody:
    that answer costs nothing.)"""
    if not blocklist:
        return False
    return any(item in blocklist for item in patterns(jid))


def matches(blocklist: Collection[str], text: str) -> bool:
    """:func:`is_blocked` for an address as text; an unparsable one is not blocked."""
    try:
        return is_blocked(blocklist, JID.parse(text))
    except JIDError:
        return False


def blocks_some_resources(blocklist: Collection[str], jid: JID) -> bool:
    """Does an item cover some resources of *jid* (a bare JID or a domain) but
    not *jid* itself? Such an item (``user@domain/resource`` or
    ``domain/resource``) matters when a stanza sent to *jid* is delivered to
    its resources."""
    prefixes = (f"{jid.bare}/", f"{jid.domain}/")
    return any(item.startswith(prefixes) for item in blocklist)
