"""Client stream negotiation (RFC 6120 §5–7) as one table: phase × event → action.

Read it beside the RFC: a client connects (HEADER), is offered STARTTLS (TLS,
or AUTH when encryption is optional), restarts the stream, authenticates with
SASL (AUTH → SASL), restarts again, binds a resource (BIND) and from then on
exchanges stanzas (READY). Anything the table does not allow ends the stream
with the error given per phase.

XEP-0198 Stream Management fits in as events of its own: ``<enable/>`` is
accepted once a resource is bound (§3: before that, ``<failed/>`` with
``<unexpected-request/>``, as before authentication); ``<resume/>`` only
between authentication and binding (§5: it takes the place of binding, so
it leads to READY; a failed one leaves the stream in BIND, where the client
may bind as usual); ``<r/>`` and ``<a/>`` travel between stanzas.

The table only decides; ``server/io/c2s.py`` carries out the named actions.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .errors import StreamError
from .stanza import E, IQ, MESSAGE, PRESENCE, sub

from .namespaces import (BIND_NS, DIALBACK_NS, REGISTER_FEATURE_NS, REGISTER_NS,  # noqa: F401
                         SASL_NS, SESSION_NS, SM_NS, STREAMS_NS, TLS_NS)


_STREAM_ERROR = f"{{{STREAMS_NS}}}error"


class Phase(enum.Enum):
    TLS = "encryption required before anything else"
    AUTH = "waiting for authentication"
    SASL = "SASL exchange in progress"
    BIND = "authenticated, waiting for resource binding"
    READY = "session established"


@dataclass(frozen=True)
class Rule:
    action: str          # name of the c2s handler, ``on_<action>``
    then: Phase          # phase after the action succeeds (restarts set their own)


#: (phase, event) → what to do. Events come from :func:`classify`.
C2S_TABLE: dict[tuple[Phase, str], Rule] = {
    # RFC 6120 §5.4: STARTTLS, then the stream restarts (the driver re-enters AUTH)
    (Phase.TLS, "starttls"): Rule("starttls", Phase.AUTH),
    (Phase.AUTH, "starttls"): Rule("starttls", Phase.AUTH),
    # §6.5.4: SASL attempted before the required TLS → <encryption-required/>
    (Phase.TLS, "auth"): Rule("sasl_encryption_required", Phase.TLS),
    # §6.4: SASL exchange
    (Phase.AUTH, "auth"): Rule("sasl_start", Phase.SASL),
    (Phase.SASL, "response"): Rule("sasl_step", Phase.SASL),
    (Phase.SASL, "abort"): Rule("sasl_abort", Phase.AUTH),
    (Phase.AUTH, "abort"): Rule("sasl_abort", Phase.AUTH),
    # XEP-0077 §3: in-band registration before authentication
    (Phase.AUTH, "iq-register"): Rule("register", Phase.AUTH),
    # §7: resource binding, then stanzas
    (Phase.BIND, "iq-bind"): Rule("bind", Phase.READY),
    (Phase.READY, "iq-bind"): Rule("bind_again", Phase.READY),
    # RFC 3921 §3 legacy session establishment: accepted as a no-op (RFC 6121 App. E)
    (Phase.BIND, "iq-session"): Rule("session", Phase.BIND),
    (Phase.READY, "iq-session"): Rule("session", Phase.READY),
    (Phase.READY, "iq-register"): Rule("stanza", Phase.READY),
    (Phase.READY, "stanza"): Rule("stanza", Phase.READY),
    # XEP-0198 §3: enable once bound; before that (or before authentication) <failed/>
    (Phase.AUTH, "sm-enable"): Rule("sm_too_early", Phase.AUTH),
    (Phase.AUTH, "sm-resume"): Rule("sm_too_early", Phase.AUTH),
    (Phase.BIND, "sm-enable"): Rule("sm_too_early", Phase.BIND),
    (Phase.READY, "sm-enable"): Rule("sm_enable", Phase.READY),
    # §5: resumption instead of binding; a bound stream cannot resume another
    (Phase.BIND, "sm-resume"): Rule("sm_resume", Phase.READY),
    (Phase.READY, "sm-resume"): Rule("sm_resume_bound", Phase.READY),
    # §4: acks and requests for them
    (Phase.READY, "sm-r"): Rule("sm_request", Phase.READY),
    (Phase.READY, "sm-a"): Rule("sm_ack", Phase.READY),
}

#: What ends the stream when an event is not in the table for a phase.
REFUSAL: dict[Phase, tuple[str, str]] = {
    Phase.TLS: ("policy-violation", "encryption is required: use STARTTLS first"),
    Phase.AUTH: ("not-authorized", "authenticate first"),
    Phase.SASL: ("not-authorized", "SASL exchange in progress"),
    Phase.BIND: ("not-authorized", "bind a resource first"),
    Phase.READY: ("unsupported-stanza-type", "unexpected element"),
}


#: The peer ended the stream with ``<stream:error/>``: in every phase we close
#: our side too, and answer no error with an error (RFC 6120 §4.9.1.1: the
#: stream is over; §4.4: close ours with ``</stream:stream>``). Prosody does the same.
PEER_STREAM_ERROR = "stream-error"


def _decide(table: dict, refusals: dict, phase, event: str) -> Rule:
    if event == PEER_STREAM_ERROR:
        return Rule("peer_stream_error", phase)
    rule = table.get((phase, event))
    if rule is None:
        condition, text = refusals[phase]
        if event == "unknown":
            condition, text = "unsupported-stanza-type", "unknown top-level element"
        raise StreamError(condition, text)
    return rule


def decide(phase: Phase, event: str) -> Rule:
    """The rule for *event* in *phase*, or a StreamError saying why not."""
    return _decide(C2S_TABLE, REFUSAL, phase, event)


def classify(el) -> str:
    """Name the negotiation event an incoming top-level element stands for."""
    tag = el.tag
    if tag in (IQ, MESSAGE, PRESENCE):
        if tag == IQ and len(el) == 1 and el.get("type") in ("set", "get"):
            child = el[0].tag
            if child == f"{{{BIND_NS}}}bind":
                return "iq-bind"
            if child == f"{{{SESSION_NS}}}session":
                return "iq-session"
            if child == f"{{{REGISTER_NS}}}query" and "@" not in (el.get("to") or ""):
                return "iq-register"            # addressed to the server itself
        return "stanza"
    if tag == f"{{{TLS_NS}}}starttls":
        return "starttls"
    if tag == f"{{{SASL_NS}}}auth":
        return "auth"
    if tag == f"{{{SASL_NS}}}response":
        return "response"
    if tag == f"{{{SASL_NS}}}abort":
        return "abort"
    if tag == _STREAM_ERROR:
        return PEER_STREAM_ERROR
    return _SM_EVENTS.get(tag, "unknown")


_SM_EVENTS = {f"{{{SM_NS}}}enable": "sm-enable", f"{{{SM_NS}}}resume": "sm-resume",
              f"{{{SM_NS}}}r": "sm-r", f"{{{SM_NS}}}a": "sm-a"}


def phase_after_header(*, secure: bool, require_tls: bool, authenticated: bool) -> Phase:
    """Where a (re)started stream begins."""
    if authenticated:
        return Phase.BIND
    if require_tls and not secure:
        return Phase.TLS
    return Phase.AUTH


def features(phase: Phase, *, secure: bool, mechanisms: list[str],
             registration: bool, extra: tuple[tuple[str, str], ...] = ()) -> "E":
    """The ``<stream:features/>`` offered at the start of *phase* (RFC 6120 §4.3.2)."""
    el = E(f"{{{STREAMS_NS}}}features")
    if phase is Phase.TLS:
        sub(sub(el, f"{{{TLS_NS}}}starttls"), f"{{{TLS_NS}}}required")
    elif phase is Phase.AUTH:
        if not secure:
            sub(el, f"{{{TLS_NS}}}starttls")
        mechs = sub(el, f"{{{SASL_NS}}}mechanisms")
        for name in mechanisms:
            sub(mechs, f"{{{SASL_NS}}}mechanism", text=name)
        if registration:
            sub(el, f"{{{REGISTER_FEATURE_NS}}}register")
    elif phase is Phase.BIND:
        sub(el, f"{{{BIND_NS}}}bind")
        sub(sub(el, f"{{{SESSION_NS}}}session"), f"{{{SESSION_NS}}}optional")
        for ns, name in sorted(extra):          # e.g. roster versioning (XEP-0237)
            sub(el, f"{{{ns}}}{name}")
    return el


# -- server-to-server, receiving side (RFC 6120 §5, XEP-0220) -------------------------------

class S2SPhase(enum.Enum):
    TLS = "encryption required before anything else"
    AUTH = "waiting for a dialback request"
    READY = "at least one domain pair authenticated"


#: (phase, event) → action for an inbound s2s stream. db:verify is answered in
#: every phase after TLS (XEP-0220 §2.1.2: a stream may exist only to verify).
S2S_IN_TABLE: dict[tuple[S2SPhase, str], Rule] = {
    (S2SPhase.TLS, "starttls"): Rule("starttls", S2SPhase.AUTH),
    (S2SPhase.AUTH, "starttls"): Rule("starttls", S2SPhase.AUTH),
    (S2SPhase.AUTH, "db-result"): Rule("dialback_request", S2SPhase.AUTH),
    (S2SPhase.READY, "db-result"): Rule("dialback_request", S2SPhase.READY),   # piggyback
    (S2SPhase.AUTH, "db-verify"): Rule("dialback_verify", S2SPhase.AUTH),
    (S2SPhase.READY, "db-verify"): Rule("dialback_verify", S2SPhase.READY),
    (S2SPhase.READY, "stanza"): Rule("stanza", S2SPhase.READY),
}

S2S_REFUSAL: dict[S2SPhase, tuple[str, str]] = {
    S2SPhase.TLS: ("policy-violation", "encryption is required: use STARTTLS first"),
    S2SPhase.AUTH: ("not-authorized", "authenticate with dialback first"),
    S2SPhase.READY: ("unsupported-stanza-type", "unexpected element"),
}



def decide_s2s(phase: S2SPhase, event: str) -> Rule:
    """The same for an inbound s2s stream."""
    return _decide(S2S_IN_TABLE, S2S_REFUSAL, phase, event)


def classify_s2s(el) -> str:
    """Name the event a top-level element of an s2s stream stands for."""
    tag = el.tag
    if tag in (IQ, MESSAGE, PRESENCE):
        return "stanza"
    if tag == f"{{{TLS_NS}}}starttls":
        return "starttls"
    if tag == f"{{{DIALBACK_NS}}}result" and el.get("type") is None:
        return "db-result"
    if tag == f"{{{DIALBACK_NS}}}verify" and el.get("type") is None:
        return "db-verify"
    if tag == _STREAM_ERROR:
        return PEER_STREAM_ERROR
    return "unknown"
