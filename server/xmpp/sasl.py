"""SASL for XMPP (RFC 6120 §6) as sans-IO state machines.

Mechanisms: SCRAM-SHA-1 / SCRAM-SHA-256 (RFC 5802, RFC 7677) and PLAIN
(RFC 4616).  Only SCRAM keys are ever stored, never passwords; PLAIN logins
are checked against those same keys.  The caller owns I/O: XML and the async
credential lookup that a ``NeedCredentials`` step asks for.  The base64 of the
``<auth/>``, ``<challenge/>``, ``<response/>`` and ``<success/>`` elements,
with RFC 6120 §6.4.2's "=" for empty data and the "incorrect-encoding"
failure, is :func:`encode_data` / :func:`decode_data`, shared by the server
(``server/io/c2s.py``) and the client (``server/client/connection.py``).

Channel binding (-PLUS) is not offered, so SCRAM accepts the "n" and "y"
GS2 flags and refuses "p".
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from typing import Mapping

from .jid import JIDError, nodeprep, saslprep

__all__ = [
    "MECHANISMS_SCRAM",
    "DEFAULT_ITERATIONS",
    "ScramCredentials",
    "make_credentials",
    "make_all_credentials",
    "new_salt",
    "portable_salt",
    "check_password",
    "SaslFailure",
    "Challenge",
    "NeedCredentials",
    "Success",
    "ServerMechanism",
    "ScramServer",
    "PlainServer",
    "server_mechanism",
    "ScramClient",
    "plain_client",
    "encode_data",
    "decode_data",
]

MECHANISMS_SCRAM = ("SCRAM-SHA-256", "SCRAM-SHA-1")
DEFAULT_ITERATIONS = 4096
#: bytes in a salt we make; see :func:`new_salt`
SALT_SIZE = 16
_HASHES = {"SCRAM-SHA-1": "sha1", "SCRAM-SHA-256": "sha256"}

# RFC 6120 §6.5 failure conditions.
CONDITIONS = frozenset(
    {
        "aborted",
        "account-disabled",
        "credentials-expired",
        "encryption-required",
        "incorrect-encoding",
        "invalid-authzid",
        "invalid-mechanism",
        "malformed-request",
        "mechanism-too-weak",
        "not-authorized",
        "temporary-auth-failure",
    }
)

# Keys fake salts for unknown users, so probing SCRAM cannot tell which
# accounts exist.  Per process: the fake salt is stable until a restart.
_FAKE_SALT_SECRET = secrets.token_bytes(32)


class SaslFailure(Exception):
    """Authentication failed; ``condition`` is the RFC 6120 element name."""

    def __init__(self, condition: str, text: str | None = None) -> None:
        if condition not in CONDITIONS:
            raise ValueError(f"unknown SASL failure condition {condition!r}")
        super().__init__(condition if text is None else f"{condition}: {text}")
        self.condition = condition
        self.text = text


# --- credentials -----------------------------------------------------------


@dataclass(frozen=True)
class ScramCredentials:
    """What we keep at rest for one account and one SCRAM hash."""

    mechanism: str
    salt: bytes
    iterations: int
    stored_key: bytes = field(repr=False)
    server_key: bytes = field(repr=False)


def _hash_name(mechanism: str) -> str:
    try:
        return _HASHES[mechanism]
    except KeyError:
        raise ValueError(f"not a SCRAM mechanism: {mechanism!r}") from None


def _salted_password(hash_name: str, password: str, salt: bytes, iterations: int) -> bytes:
    """Hi() from RFC 5802, which is PBKDF2 with HMAC of the mechanism hash."""
    return hashlib.pbkdf2_hmac(hash_name, saslprep(password).encode("utf-8"), salt, iterations)


# Clients (our CLI and the load generator) log in repeatedly with one password.
_client_salted_password = functools.lru_cache(maxsize=64)(_salted_password)


def _keys(hash_name: str, salted_password: bytes) -> tuple[bytes, bytes, bytes]:
    """ClientKey, StoredKey and ServerKey for a SaltedPassword."""
    client_key = hmac.digest(salted_password, b"Client Key", hash_name)
    server_key = hmac.digest(salted_password, b"Server Key", hash_name)
    return client_key, hashlib.new(hash_name, client_key).digest(), server_key


def new_salt() -> bytes:
    """A fresh SCRAM salt, random (RFC 5802 §9) and with no zero byte.

    Prosody's SQL storage (0.12 with LuaDBI's SQLite3 driver) stores a salt
    whole but reads it back cut at its first 0x00, so an account whose salt
    holds one cannot log in there after its export is imported
    (``prosody-migrator`` into ``storage = "sql"``); Prosody's file storage
    keeps such salts whole. So every byte is drawn uniformly from the 255
    non-zero values. 16 of them, the size of the salts made before, carry
    16·log2(255) ≈ 127.9 bits: as unique as any salt needs to be (one
    collision expected after ~2^64 salts), a hair under the 128 bits NIST
    SP 800-132 §5.1 names. The size stays 16 on purpose: unknown users get
    fake salts of the size of real ones (:func:`_fake_salt`), so that SCRAM
    probing cannot tell which accounts exist; a new size would set every
    account made before apart from unknown users for as long as it keeps
    its salt (a SCRAM login never renews one).
    Salts made before may hold a zero: :func:`portable_salt` tells, and a
    PLAIN login replaces them (:attr:`PlainServer.renewed`).
    """
    return bytes(secrets.randbelow(255) + 1 for _ in range(SALT_SIZE))


def portable_salt(salt: bytes) -> bool:
    """False for a salt that Prosody's SQL storage would cut (a zero byte: :func:`new_salt`)."""
    return 0 not in salt


def make_credentials(
    password: str, mechanism: str, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None
) -> ScramCredentials:
    """Derive storable SCRAM keys; raises ValueError for unusable passwords."""
    hash_name = _hash_name(mechanism)
    if iterations < 1:
        raise ValueError("iterations must be at least 1")
    if not saslprep(password):
        raise ValueError("password is empty")
    if salt is None:
        salt = new_salt()
    _, stored_key, server_key = _keys(hash_name, _salted_password(hash_name, password, salt, iterations))
    return ScramCredentials(mechanism, salt, iterations, stored_key, server_key)


def make_all_credentials(password: str, iterations: int = DEFAULT_ITERATIONS) -> dict[str, ScramCredentials]:
    """One set of credentials per SCRAM mechanism we offer."""
    return {mech: make_credentials(password, mech, iterations) for mech in MECHANISMS_SCRAM}


def check_password(password: str, creds: ScramCredentials) -> bool:
    """True if ``password`` derives the stored key (compared in constant time)."""
    hash_name = _hash_name(creds.mechanism)
    try:
        salted = _salted_password(hash_name, password, creds.salt, creds.iterations)
    except ValueError:  # saslprep refused it, so it cannot match
        return False
    _, stored_key, _ = _keys(hash_name, salted)
    return hmac.compare_digest(stored_key, creds.stored_key)


# --- server side -------------------------------------------------------------


@dataclass
class Challenge:
    """Send ``<challenge>`` with this data."""

    data: bytes


@dataclass
class NeedCredentials:
    """Look up credentials for ``username`` (nodeprepped), then call ``provide``."""

    username: str


@dataclass
class Success:
    """Send ``<success>`` (with ``data`` if not None); ``authzid`` is for the caller to judge."""

    username: str
    authzid: str | None
    data: bytes | None = None


Step = Challenge | NeedCredentials | Success


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SaslFailure("malformed-request", "not UTF-8") from None


def _username(raw: str) -> str:
    try:
        return nodeprep(raw)
    except JIDError:
        raise SaslFailure("not-authorized", "invalid username") from None


class ServerMechanism:
    """One authentication exchange; every method raises SaslFailure on error."""

    name: str = ""
    wants: str = ""  # which ScramCredentials mechanism ``provide`` expects

    def start(self, initial: bytes | None) -> Step:
        """Handle ``<auth>``; ``initial`` is None without an initial response."""
        raise NotImplementedError

    def step(self, data: bytes) -> Step:
        """Handle a ``<response>``."""
        raise SaslFailure("malformed-request", "unexpected response")

    def provide(self, creds: ScramCredentials | None) -> Challenge | Success:
        """Continue after NeedCredentials; None means no such user."""
        raise RuntimeError("no credentials were requested")


def encode_data(data: bytes) -> str:
    """The text of a SASL element carrying *data* (RFC 6120 §6.4.2): base64,
    and a single "=" for zero-length data (an empty element would mean "no
    data" instead)."""
    return base64.b64encode(data).decode("ascii") if data else "="


def decode_data(text: str | None, *, initial: bool = False) -> bytes | None:
    """The data in the text of a SASL element (RFC 6120 §6.4.2, §6.4.3).

    "=" is zero-length data. An empty element is "no data": None for an
    ``<auth/>`` (*initial*: no initial response, the server sends an empty
    challenge), b"" for the other elements. White space around the text is
    ignored (XML pretty-printing); anything else that is not strict base64 —
    white space inside, a bad alphabet, bad padding — is
    ``SaslFailure("incorrect-encoding")`` (RFC 6120 §6.5.2).
    """
    text = text.strip() if text else ""
    if not text:
        return None if initial else b""
    if text == "=":
        return b""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SaslFailure("incorrect-encoding", "invalid base64") from None


def _b64(data: bytes) -> str:
    """Base64 inside a SCRAM attribute (no "=" rule: RFC 5802 §5.1)."""
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SaslFailure("malformed-request", "bad base64 in SCRAM attribute") from None


def _escape_saslname(name: str) -> str:
    return name.replace("=", "=3D").replace(",", "=2C")


def _unescape_saslname(name: str) -> str:
    """Decode '=2C' and '=3D'; any other '=' is malformed (RFC 5802 §5.1)."""
    for i, ch in enumerate(name):
        if ch == "=" and name[i + 1 : i + 3] not in ("2C", "3D"):
            raise SaslFailure("malformed-request", "bad '=' escape in SCRAM name")
    return name.replace("=2C", ",").replace("=3D", "=")


def _attrs(text: str) -> list[tuple[str, str]]:
    """Split 'a=x,b=y' into pairs, insisting on single-letter attribute names."""
    pairs = []
    for item in text.split(","):
        if len(item) < 2 or item[1] != "=" or not (item[0].isascii() and item[0].isalpha()):
            raise SaslFailure("malformed-request", f"bad SCRAM attribute {item[:16]!r}")
        pairs.append((item[0], item[2:]))
    return pairs


def _expect(pairs: list[tuple[str, str]], names: str) -> list[str]:
    """Values of the leading attributes ``names`` (in order); later ones are extensions."""
    if pairs and pairs[0][0] == "m":
        raise SaslFailure("malformed-request", "extensions-not-supported")
    if len(pairs) < len(names) or any(pairs[i][0] != n for i, n in enumerate(names)):
        raise SaslFailure("malformed-request", f"expected attributes {', '.join(names)}")
    values = [value for _, value in pairs[: len(names)]]
    if not all(values) or not all(value for _, value in pairs[len(names) :]):
        raise SaslFailure("malformed-request", "empty SCRAM attribute")
    return values


def _check_nonce(nonce: str) -> str:
    if not nonce or any(not ("\x21" <= ch <= "\x7e") or ch == "," for ch in nonce):
        raise SaslFailure("malformed-request", "bad SCRAM nonce")
    return nonce


def _fake_salt(mechanism: str, username: str) -> bytes:
    """A stable salt for an unknown user that looks like one of :func:`new_salt`
    (its size, no zero byte), so it does not set unknown users apart from new
    accounts: the non-zero bytes of an HMAC stream, uniform over 1…255."""
    salt = b""
    for block in range(SALT_SIZE):              # each block yields ~32 usable bytes
        msg = f"{mechanism}\0{username}\0{block}".encode("utf-8")
        salt += hmac.digest(_FAKE_SALT_SECRET, msg, "sha256").replace(b"\0", b"")
        if len(salt) >= SALT_SIZE:
            break
    return salt[:SALT_SIZE]


class ScramServer(ServerMechanism):
    """Server side of SCRAM-SHA-1 / SCRAM-SHA-256 without channel binding.

    Unknown users get a deterministic fake salt and the default iteration
    count, and fail only at the proof, like a wrong password does.
    """

    def __init__(self, name: str, *, nonce: str | None = None) -> None:
        self.name = self.wants = name
        self._hash = _hash_name(name)
        # Our half of the nonce; injectable so tests can replay RFC examples.
        self._server_nonce = _check_nonce(nonce) if nonce is not None else secrets.token_urlsafe(18)
        self._state = "start"
        self._gs2_header = ""
        self._client_first_bare = ""
        self._server_first = ""
        self._nonce = ""
        self._username = ""
        self._authzid: str | None = None
        self._creds: ScramCredentials | None = None

    def start(self, initial: bytes | None) -> Step:
        if self._state != "start":
            raise RuntimeError("start() called twice")
        if initial is None:
            self._state = "client-first"
            return Challenge(b"")
        return self._client_first(initial)

    def step(self, data: bytes) -> Step:
        if self._state == "client-first":
            return self._client_first(data)
        if self._state == "client-final":
            return self._client_final(data)
        raise SaslFailure("malformed-request", "unexpected response")

    def _client_first(self, data: bytes) -> NeedCredentials:
        text = _text(data)
        parts = text.split(",", 2)
        if len(parts) != 3:
            raise SaslFailure("malformed-request", "bad GS2 header")
        flag, authz, bare = parts
        if flag.startswith("p="):
            raise SaslFailure("malformed-request", "channel-binding-not-supported")
        if flag not in ("n", "y"):  # 'y': client could bind but we offer no -PLUS, which is fine
            raise SaslFailure("malformed-request", "bad GS2 header")
        if authz:
            if not authz.startswith("a=") or len(authz) == 2:
                raise SaslFailure("malformed-request", "bad authzid in GS2 header")
            self._authzid = _unescape_saslname(authz[2:])
        username, client_nonce = _expect(_attrs(bare), "nr")
        self._username = _username(_unescape_saslname(username))
        self._nonce = _check_nonce(client_nonce) + self._server_nonce
        self._gs2_header = f"{flag},{authz},"
        self._client_first_bare = bare
        self._state = "need-credentials"
        return NeedCredentials(self._username)

    def provide(self, creds: ScramCredentials | None) -> Challenge:
        if self._state != "need-credentials":
            raise RuntimeError("provide() called without NeedCredentials")
        if creds is None:
            salt, iterations = _fake_salt(self.name, self._username), DEFAULT_ITERATIONS
        elif creds.mechanism != self.name:
            raise ValueError(f"{self.name} needs {self.name} credentials, got {creds.mechanism}")
        else:
            salt, iterations = creds.salt, creds.iterations
        self._creds = creds
        self._server_first = f"r={self._nonce},s={_b64(salt)},i={iterations}"
        self._state = "client-final"
        return Challenge(self._server_first.encode("ascii"))

    def _client_final(self, data: bytes) -> Success:
        self._state = "done"
        text = _text(data)
        without_proof, sep, proof_b64 = text.rpartition(",p=")
        if not sep:
            raise SaslFailure("malformed-request", "missing proof")
        cbind, nonce = _expect(_attrs(without_proof), "cr")
        if _unb64(cbind) != self._gs2_header.encode("utf-8"):
            raise SaslFailure("not-authorized", "channel-bindings-dont-match")
        if not hmac.compare_digest(nonce.encode("utf-8"), self._nonce.encode("ascii")):
            raise SaslFailure("not-authorized", "nonce mismatch")
        proof = _unb64(proof_b64)
        size = hashlib.new(self._hash).digest_size
        if len(proof) != size:
            raise SaslFailure("malformed-request", "proof has the wrong length")

        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode("utf-8")
        creds = self._creds
        # Unknown users run the same computation against random keys.
        stored_key = creds.stored_key if creds else secrets.token_bytes(size)
        server_key = creds.server_key if creds else secrets.token_bytes(size)
        client_signature = hmac.digest(stored_key, auth_message, self._hash)
        client_key = bytes(a ^ b for a, b in zip(proof, client_signature))
        matches = hmac.compare_digest(hashlib.new(self._hash, client_key).digest(), stored_key)
        if not (matches and creds):
            raise SaslFailure("not-authorized")
        server_signature = hmac.digest(server_key, auth_message, self._hash)
        return Success(self._username, self._authzid, b"v=" + _b64(server_signature).encode("ascii"))


class PlainServer(ServerMechanism):
    """Server side of PLAIN, checked against stored SCRAM credentials.

    PLAIN is the one mechanism that sees the password (and is offered only
    over TLS), so a successful PLAIN login is when stored keys can be put
    right: :attr:`renewed` holds the account's credentials to store instead
    of :attr:`checked` when keys for *wants* were missing (an account
    imported with SCRAM-SHA-1 keys only, as Prosody 0.12 keeps them) or a
    salt holds a zero byte (see :func:`new_salt`). The caller stores them
    only if the account still has :attr:`checked` (a password changed
    meanwhile wins).
    """

    name = "PLAIN"

    def __init__(self, wants: str = "SCRAM-SHA-256") -> None:
        _hash_name(wants)
        self.wants = wants
        self._state = "start"
        self._username = ""
        self._authzid: str | None = None
        self._password: str | None = None
        #: every SCRAM credential the account had when the password was checked
        self.checked: dict[str, ScramCredentials] = {}
        #: what to store instead of :attr:`checked` after this login; None: keep them
        self.renewed: dict[str, ScramCredentials] | None = None

    def start(self, initial: bytes | None) -> Step:
        if self._state != "start":
            raise RuntimeError("start() called twice")
        if initial is None:
            self._state = "response"
            return Challenge(b"")
        return self._response(initial)

    def step(self, data: bytes) -> Step:
        if self._state != "response":
            raise SaslFailure("malformed-request", "unexpected response")
        return self._response(data)

    def _response(self, data: bytes) -> NeedCredentials:
        parts = _text(data).split("\0")
        if len(parts) != 3 or not parts[1] or not parts[2]:
            raise SaslFailure("malformed-request", "expected authzid NUL authcid NUL password")
        authzid, authcid, password = parts
        self._username = _username(authcid)
        self._authzid = authzid or None
        self._password = password
        self._state = "need-credentials"
        return NeedCredentials(self._username)

    def provide(self, creds: ScramCredentials | None) -> Success:
        return self.provide_all({creds.mechanism: creds} if creds else {})

    def provide_all(self, stored: Mapping[str, ScramCredentials]) -> Success:
        """Continue after NeedCredentials with every SCRAM credential the
        account has (empty: no such user). The password is checked against
        the *wants* keys, else against those of another mechanism."""
        if self._state != "need-credentials":
            raise RuntimeError("provide_all() called without NeedCredentials")
        self._state = "done"
        password, self._password = self._password or "", None  # do not keep it around
        creds = stored.get(self.wants) or next(
            (stored[mech] for mech in MECHANISMS_SCRAM if mech in stored), None)
        if creds is None:
            # Spend the same effort as a real check so timing does not reveal the user.
            fake = ScramCredentials(self.wants, _fake_salt(self.wants, self._username), DEFAULT_ITERATIONS, b"", b"")
            check_password(password, fake)
            raise SaslFailure("not-authorized")
        if not check_password(password, creds):
            raise SaslFailure("not-authorized")
        self.checked = dict(stored)
        stale = [mech for mech, have in stored.items() if not portable_salt(have.salt)]
        if self.wants not in stored:
            stale.append(self.wants)
        if stale:
            self.renewed = dict(stored)
            for mech in stale:
                iterations = stored[mech].iterations if mech in stored else creds.iterations
                self.renewed[mech] = make_credentials(password, mech, iterations)
        return Success(self._username, self._authzid, None)


def server_mechanism(name: str, *, credentials_mechanism_for_plain: str = "SCRAM-SHA-256") -> ServerMechanism:
    """A fresh server mechanism for one ``<auth mechanism=name>``."""
    if name == "PLAIN":
        return PlainServer(credentials_mechanism_for_plain)
    if name in MECHANISMS_SCRAM:
        return ScramServer(name)
    raise SaslFailure("invalid-mechanism", f"unsupported mechanism {name!r}")


# --- client side ---------------------------------------------------------------


class ScramClient:
    """Client side of SCRAM without channel binding (GS2 flag "n")."""

    def __init__(
        self,
        mechanism: str,
        username: str,
        password: str,
        *,
        nonce: str | None = None,
        authzid: str | None = None,
    ) -> None:
        self.mechanism = mechanism
        self._hash = _hash_name(mechanism)
        self._gs2_header = f"n,a={_escape_saslname(authzid)}," if authzid else "n,,"
        self._username = saslprep(username)
        self._password = password
        self._nonce = _check_nonce(nonce) if nonce is not None else secrets.token_urlsafe(18)
        self._client_first_bare = f"n={_escape_saslname(self._username)},r={self._nonce}"
        self._server_signature: bytes | None = None

    def first(self) -> bytes:
        """client-first-message."""
        return (self._gs2_header + self._client_first_bare).encode("utf-8")

    def final(self, server_first: bytes) -> bytes:
        """client-final-message for the server's challenge."""
        text = _text(server_first)
        nonce, salt_b64, iterations_text = _expect(_attrs(text), "rsi")
        if not nonce.startswith(self._nonce) or len(nonce) == len(self._nonce):
            raise SaslFailure("not-authorized", "server nonce does not extend ours")
        _check_nonce(nonce)
        salt = _unb64(salt_b64)
        if not iterations_text.isascii() or not iterations_text.isdigit() or int(iterations_text) < 1:
            raise SaslFailure("malformed-request", "bad iteration count")
        salted = _client_salted_password(self._hash, self._password, salt, int(iterations_text))
        client_key, stored_key, server_key = _keys(self._hash, salted)

        without_proof = f"c={_b64(self._gs2_header.encode('utf-8'))},r={nonce}"
        auth_message = f"{self._client_first_bare},{text},{without_proof}".encode("utf-8")
        client_signature = hmac.digest(stored_key, auth_message, self._hash)
        proof = bytes(a ^ b for a, b in zip(client_key, client_signature))
        self._server_signature = hmac.digest(server_key, auth_message, self._hash)
        return f"{without_proof},p={_b64(proof)}".encode("ascii")

    def verify(self, server_final: bytes) -> None:
        """Check the server knew our keys too (mutual authentication)."""
        if self._server_signature is None:
            raise RuntimeError("verify() called before final()")
        text = _text(server_final)
        if text.startswith("e="):
            raise SaslFailure("not-authorized", text[2:].split(",", 1)[0])
        (signature,) = _expect(_attrs(text), "v")
        if not hmac.compare_digest(_unb64(signature), self._server_signature):
            raise SaslFailure("not-authorized", "server signature mismatch")


def plain_client(username: str, password: str, authzid: str = "") -> bytes:
    """The PLAIN initial response (RFC 4616)."""
    return f"{authzid}\0{username}\0{password}".encode("utf-8")
