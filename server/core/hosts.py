"""Per-domain state: the host's config, its modules, its event bus and its
online sessions.

Modules are declared as data (``server/core/module.py``): the host loads them
in order, checks their dependencies, registers their hooks on ``host.events``
and collects the service discovery features they announce. Modules never
import each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import logging
import os
from typing import TYPE_CHECKING

from .events import EventBus
from ..xmpp.jid import JID

if TYPE_CHECKING:
    from ..config import Config, HostConfig
    from .service import Xferd

log = logging.getLogger("xferd.hosts")

#: Modules every host loads, in order. Later issues add to this list.
DEFAULT_MODULES = ("disco", "ping", "version", "register", "roster", "subscription",
                   "presence", "message", "offline", "private", "vcard", "pep", "blocking",
                   "moved")

#: check the payload type of every event fired (the test servers do; it costs
#: a look-up per event, so production does not)
CHECK_PAYLOADS = os.environ.get("XFERD_CHECK_EVENTS") == "1"

#: Transition only, removed with the ``setup(host)`` fallback below: the shape
#: each server event had before payloads were typed, for the handlers of
#: modules not yet declared as data.
_OLD_PAYLOADS = {
    "login": lambda event: (event.session, event.username),
    "presence-initial": lambda event: event.session,
    "resource-unbind": lambda event: event.session,
    "server-started": lambda event: event.server,
    "server-stopping": lambda event: event.server,
}


def _old_shape(fn, unwrap):
    @functools.wraps(fn)
    def handler(event):
        return fn(unwrap(event))
    return handler


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
        #: (username, contact) → [lock, holders and waiters]: see roster_items()
        self._item_locks: dict[tuple[str, str], list] = {}

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
            declared = getattr(source, "MODULE", None)
            if declared is None:                  # not yet declared as data
                self._setup_old_module(source)
                self.modules[name] = source
                log.debug("%s: module %s loaded", self.domain, name)
                continue
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

    def _setup_old_module(self, source) -> None:
        """Run an old ``setup(host)``, its handlers of server events getting
        the payloads of before (see ``_OLD_PAYLOADS``)."""
        register = self.events.on

        def on(name, fn, priority=0):
            unwrap = _OLD_PAYLOADS.get(name)
            register(name, fn if unwrap is None else _old_shape(fn, unwrap), priority)

        self.events.on = on
        try:
            source.setup(self)
        finally:
            del self.events.on

    # -- roster items ----------------------------------------------------------
    @contextlib.asynccontextmanager
    async def roster_items(self, username: str, *contacts: str):
        """Hold *username*'s roster items for *contacts* while reading, deciding
        and writing them: the stanzas that change one item arrive on different
        streams (the user's session, the contact's server) and are handled side
        by side, and two read-then-write handlers on the same item would lose
        one of the writes. Hold no stanza routing under it: a reply routed back
        to this user for the same contact would wait for itself. Locks are
        taken in sorted order, so two holders of several never deadlock."""
        entries = []
        for contact in sorted(set(contacts)):
            entry = self._item_locks.setdefault((username, contact), [asyncio.Lock(), 0])
            entry[1] += 1
            entries.append(((username, contact), entry))
        try:
            async with contextlib.AsyncExitStack() as stack:
                for _, (lock, _) in entries:
                    await stack.enter_async_context(lock)
                yield
        finally:
            for key, entry in entries:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._item_locks[key]

    # -- sessions -------------------------------------------------------------
    def user_sessions(self, username: str) -> dict[str, object]:
        return self.sessions.get(username, {})

    def available_sessions(self, username: str) -> list:
        """Bound sessions that sent available presence (RFC 6121 §4.2)."""
        return [s for s in self.sessions.get(username, {}).values() if s.presence is not None]

    def interested_sessions(self, username: str) -> list:
        """Sessions that asked for the roster and so get roster pushes (§2.1.6)."""
        return [s for s in self.sessions.get(username, {}).values() if s.roster_requested]

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
