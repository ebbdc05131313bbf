"""Per-domain state: the host's config, its modules, its event bus, its
roster service (``host.rosters``, ``server/core/rosters.py``) and its online
sessions.

Modules are declared as data (``server/core/module.py``): the host loads them
in order, checks their dependencies, registers their hooks on ``host.events``
and collects the service discovery features they announce. Modules never
import each other.
"""

from __future__ import annotations

import importlib
import logging
import os
from typing import TYPE_CHECKING

from .events import EventBus
from .rosters import Rosters
from ..xmpp.jid import JID

if TYPE_CHECKING:
    from ..config import Config, HostConfig
    from .service import Xferd

log = logging.getLogger("xferd.hosts")

#: Modules every host loads, in order (accountxfer too when enabled).
DEFAULT_MODULES = ("disco", "ping", "version", "last", "register", "roster", "subscription",
                   "presence", "message", "offline", "private", "vcard", "caps", "pep",
                   "blocking", "moved", "mam")

#: check the payload type of every event fired (the test servers do; it costs
#: a look-up per event, so production does not)
CHECK_PAYLOADS = os.environ.get("XFERD_CHECK_EVENTS") == "1"


class Host:
    def __init__(self, domain: str, config: "HostConfig", server: "Xferd"):
        self.domain = domain
        self.jid = JID(None, domain)
        self.config = config
        self.server = server
        self.events = EventBus(check_payloads=CHECK_PAYLOADS)
        #: service discovery features (XEP-0030) of the domain itself …
        self.features: set[str] = set()
        #: … and of every user account (a bare JID), e.g. PEP's
        self.account_features: set[str] = set()
        #: stream features offered after authentication: (namespace, name)
        self.stream_features: set[tuple[str, str]] = set()
        #: extra disco identities of accounts: (category, type)
        self.account_identities: set[tuple[str, str]] = set()
        #: username → resource → c2s session (only bound sessions)
        self.sessions: dict[str, dict[str, object]] = {}
        #: name → the loaded module, in load order
        self.modules: dict[str, object] = {}
        #: the one roster service: every roster change goes through it
        self.rosters = Rosters(self)

    @property
    def storage(self):
        return self.server.storage

    @property
    def global_config(self) -> "Config":
        return self.server.config

    def load_modules(self, names=DEFAULT_MODULES) -> None:
        if self.server.config.accountxfer.enabled:
            names = (*names, "accountxfer")
        for name in names:
            source = importlib.import_module(f"server.modules.{name}")
            declared = source.MODULE
            missing = [d for d in declared.depends if d not in self.modules]
            if missing:
                raise RuntimeError(f"module {name} needs {', '.join(missing)} loaded first")
            module = declared(self)
            for hook in module.hooks():
                self.events.on(hook.event, hook.handler, hook.priority)
            self.features.update(module.features)
            self.account_features.update(module.account_features)
            self.account_identities.update(module.account_identities)
            self.stream_features.update(module.stream_features)
            self.modules[name] = module
            log.debug("%s: module %s loaded", self.domain, name)

    # -- sessions -------------------------------------------------------------
    def user_sessions(self, username: str) -> dict[str, object]:
        return self.sessions.get(username, {})

    def available_sessions(self, username: str) -> list:
        """Bound sessions that sent available presence (RFC 6121 §4.2)."""
        return [s for s in self.sessions.get(username, {}).values() if s.presence is not None]

    def session(self, jid: JID):
        return self.sessions.get(jid.local, {}).get(jid.resource)

    def add_session(self, session) -> object | None:
        """Register a bound session; returns the session it replaces, if any."""
        resources = self.sessions.setdefault(session.jid.local, {})
        old = resources.get(session.jid.resource)
        resources[session.jid.resource] = session
        return old

    def remove_session(self, session) -> None:
        resources = self.sessions.get(session.jid.local)
        if resources and resources.get(session.jid.resource) is session:
            del resources[session.jid.resource]
            if not resources:
                del self.sessions[session.jid.local]
