"""ejabberd's dialect of XEP-0227: SCRAM values base64-encoded twice, one XInclude level.

ejabberd keeps an account's SCRAM salt, StoredKey and ServerKey as base64
*text* (``ejabberd_auth:password_to_scram``), and its exporter
(``ejabberd_piefxis:format_scram_password``) base64-encodes that text once
more; its importer decodes once and stores the result, which is base64 text
again. XEP-0227 §4.3 wants the base64 of the bytes, once. What each ejabberd
release writes and reads (from the history of ``src/ejabberd_piefxis.erl``
and ``src/ejabberd_auth.erl``):

* 19.02 – 21.07: ``<user password='scram:[HASH,]STORED,SERVER,SALT,COUNT'>``,
  every value encoded twice (``HASH`` — ``sha256``/``sha512`` — since 20.12;
  SHA-1 has none). 20.02 and later decode that once on import; 19.02 – 20.01
  did not decode at all (ejabberd's issue #3167), so they read only the
  single-encoded values nobody wrote.
* 21.12 – today (the file is unchanged since September 2021 apart from
  copyright lines; 23.01 is Debian 12's): ``<scram-credentials>`` (§4.3)
  with salt, server-key and stored-key each encoded twice, read back the same
  way. Only the *first* ``<scram-credentials>`` of a user is read, and a
  ``<user>`` carrying both the ``password='scram:…'`` attribute and the
  element is refused (no clause matches both), so we never write the old form.
  An ejabberd stores one SCRAM hash per account and offers only the mechanism
  of its ``auth_scram_hash`` (default ``sha``; :data:`SCRAM_HASHES`), so the
  credentials of that mechanism must come first.

How we tell the forms apart: a SCRAM key is exactly as long as its hash
(20 bytes for SHA-1, 32 for SHA-256). Decoded once, ejabberd's value is the
28 (44) characters of base64 text instead, and decoding *that* gives the key.
The two lengths never coincide, so no file is ambiguous. ejabberd encodes the
salt the same way as the keys, so a salt is decoded twice exactly when the
keys were.

XIncludes (§5 says an importer "MUST do proper XInclude processing"):
ejabberd's importer follows an element named literally ``xi:include``
wherever it meets one outside a ``<user>``, but reads every file as a stream
of its root's children. An included file whose root is a ``<user>`` (the
§5.1 layout) has that account registered from the start tag alone, without
the credentials inside it; registration refuses the empty password, so no
account is made, and the import still exits 0. The ejabberd layout is
therefore ejabberd's own: ``main.xml`` → one host file with its users inline
(see :func:`storage.pie.export_host`); a single-account file
(server-data → host → user) is read as it is.
"""

from __future__ import annotations

import base64
import binascii
from urllib.parse import quote

#: the value of ``xferd export --dialect`` that writes this form
DIALECT = "ejabberd"
#: the default: XEP-0227 as written, the form Prosody reads and writes
STANDARD = "xep0227"
DIALECTS = (STANDARD, DIALECT)


def encode(value: bytes) -> str:
    """A SCRAM salt or key the way ejabberd writes it: base64 of its base64."""
    return base64.b64encode(base64.b64encode(value)).decode("ascii")


def _decode_again(value: bytes, size: int | None) -> bytes | None:
    """*value* (once-decoded text) decoded a second time, if it is base64 text
    of a value of *size* bytes (any size, not empty, for a salt)."""
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    if not decoded or (size is not None and len(decoded) != size):
        return None
    return decoded


def unwrap(size: int, salt: bytes, server_key: bytes, stored_key: bytes
           ) -> tuple[bytes, bytes, bytes] | None:
    """(salt, server key, stored key) out of ejabberd's twice-encoded values,
    already decoded once; None if they are not that form for a hash of *size*."""
    keys = [_decode_again(key, size) for key in (server_key, stored_key)]
    salt_bytes = _decode_again(salt, None)
    if None in keys or salt_bytes is None:
        return None
    return salt_bytes, keys[0], keys[1]


#: ejabberd's ``auth_scram_hash`` values → the mechanism it offers (xferd keeps
#: no SCRAM-SHA-512 keys, so ``sha512`` cannot be served)
SCRAM_HASHES = {"sha": "SCRAM-SHA-1", "sha256": "SCRAM-SHA-256"}

#: a key's length once decoded: raw (XEP-0227) or base64 text (ejabberd)
KEY_SIZES = {20: "SCRAM-SHA-1", 28: "SCRAM-SHA-1", 32: "SCRAM-SHA-256", 44: "SCRAM-SHA-256",
             64: "SCRAM-SHA-512", 88: "SCRAM-SHA-512"}


def host_filename(host: str) -> str:
    """The host file of the ejabberd layout, beside ``main.xml``. ejabberd joins
    an ``href`` to the directory as it is, without undoing %-escapes, so the
    name must need none."""
    return f"{host}.xml" if quote(host, safe="") == host and host != "main" else "host.xml"
