"""XEP-0115 Entity Capabilities (version 1.6), the side that *processes*
caps (sans-IO): what a presence announces, and whether a disco#info answer
matches the announced verification string.

* :func:`announcement` reads ``<c xmlns='http://jabber.org/protocol/caps'/>``
  (§4: ``hash``, ``node``, ``ver`` required; without ``hash`` it is the
  legacy format of §13).
* :func:`verification_string` builds S from a disco#info ``<query/>`` as §5.1
  says, after §5.4 steps 3.3–3.6: a duplicate identity
  (category/type/lang/name), a duplicate feature, two forms with one
  FORM_TYPE or a FORM_TYPE with different values make the whole answer
  ill-formed (:class:`IllFormed`); a form without FORM_TYPE, or whose
  FORM_TYPE field is not ``type='hidden'``, is left out. Sorting is by code
  point, which is the "i;octet" order of the UTF-8 bytes.
* :func:`verify` hashes S with the announced algorithm and compares (§5.4
  3.7–3.9). :data:`HASHES` are the algorithms we verify: SHA-1 (mandatory,
  §9.1) and the SHA-2 family of the IANA hash function textual names
  registry (§9.1 allows others). An answer for any other ``hash``, or for
  legacy caps, cannot be verified: §5.4 step 2 says to use it for the one
  entity that gave it and not to cache it globally.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from .namespaces import CAPS_NS, DATA_NS, DISCO_INFO_NS, XML_NS

#: hash names (IANA "Hash Function Textual Names") → hashlib constructor
HASHES = {
    "sha-1": hashlib.sha1,
    "sha-224": hashlib.sha224,
    "sha-256": hashlib.sha256,
    "sha-384": hashlib.sha384,
    "sha-512": hashlib.sha512,
}

_IDENTITY = f"{{{DISCO_INFO_NS}}}identity"
_FEATURE = f"{{{DISCO_INFO_NS}}}feature"
_FORM = f"{{{DATA_NS}}}x"
_FIELD = f"{{{DATA_NS}}}field"
_VALUE = f"{{{DATA_NS}}}value"
_LANG = f"{{{XML_NS}}}lang"


class IllFormed(ValueError):
    """A disco#info answer §5.4 3.3–3.5 rejects as a whole."""


@dataclass(frozen=True)
class Announcement:
    """What a presence's ``<c/>`` announces (§4)."""
    node: str
    ver: str
    hash: str | None = None          # None: the legacy format (§13)
    ext: str | None = None           # legacy feature bundles; deprecated (§4)

    @property
    def verifiable(self) -> bool:
        """The ver is a verification string in an algorithm we support (§5.4 3)."""
        return self.hash in HASHES

    @property
    def disco_node(self) -> str:
        """The node of the disco#info request (§6.2): node '#' ver."""
        return f"{self.node}#{self.ver}"


def announcement(presence) -> Announcement | None:
    """The caps a presence announces; None without ``<c/>`` or without its
    required ``node`` and ``ver``."""
    c = presence.find(f"{{{CAPS_NS}}}c")
    if c is None:
        return None
    node, ver = c.get("node"), c.get("ver")
    if not node or not ver:
        return None
    return Announcement(node, ver, c.get("hash") or None, c.get("ext") or None)


def _form_type(form) -> tuple[str | None, bool]:
    """(FORM_TYPE value, whether its field is hidden); IllFormed for a
    FORM_TYPE with different values (§5.4 3.5)."""
    for field in form.iterfind(_FIELD):
        if field.get("var") == "FORM_TYPE":
            values = {v.text or "" for v in field.iterfind(_VALUE)}
            if len(values) > 1:
                raise IllFormed("a FORM_TYPE with different values")
            value = values.pop() if values else None
            return value, field.get("type") == "hidden"
    return None, False


def verification_string(query) -> str:
    """S of §5.1 for a disco#info ``<query/>`` (IllFormed: §5.4 3.3–3.5)."""
    identities = [(i.get("category") or "", i.get("type") or "", i.get(_LANG) or "",
                   i.get("name") or "") for i in query.iterfind(_IDENTITY)]
    if len(set(identities)) != len(identities):
        raise IllFormed("the same identity twice")
    features = [f.get("var") or "" for f in query.iterfind(_FEATURE)]
    if len(set(features)) != len(features):
        raise IllFormed("the same feature twice")
    forms: dict[str, object] = {}
    for form in query.iterfind(_FORM):
        form_type, hidden = _form_type(form)
        if form_type is None:
            continue                             # §5.4 3.6: no FORM_TYPE, ignored
        if form_type in forms:
            raise IllFormed(f"two forms of FORM_TYPE {form_type!r}")
        forms[form_type] = form if hidden else None       # not hidden: ignored (3.6)

    parts = ["/".join(identity) + "<" for identity in sorted(identities)]
    parts += [feature + "<" for feature in sorted(features)]
    for form_type in sorted(t for t, form in forms.items() if form is not None):
        parts.append(form_type + "<")
        fields = [(f.get("var"), sorted(v.text or "" for v in f.iterfind(_VALUE)))
                  for f in forms[form_type].iterfind(_FIELD)
                  if f.get("var") and f.get("var") != "FORM_TYPE"]
        for var, values in sorted(fields):
            parts.append(var + "<")
            parts += [value + "<" for value in values]
    return "".join(parts)


def ver(query, algorithm: str) -> str:
    """The verification string of *query* in *algorithm* (§5.1 step 9);
    KeyError for an algorithm not in :data:`HASHES`."""
    digest = HASHES[algorithm](verification_string(query).encode("utf-8")).digest()
    return base64.b64encode(digest).decode("ascii")


def verify(query, caps: Announcement) -> bool:
    """§5.4 3.3–3.9: does *query* (the disco#info answer) match *caps*?
    False for an ill-formed answer or one whose hash differs."""
    if not caps.verifiable:
        return False
    try:
        return ver(query, caps.hash) == caps.ver
    except IllFormed:
        return False


def features(query) -> frozenset[str]:
    """The features a disco#info ``<query/>`` lists."""
    return frozenset(f.get("var") for f in query.iterfind(_FEATURE) if f.get("var"))
