"""How a feature module declares itself (ejabberd's ``start/2`` list).

A module is a class: what it needs (``depends``), what it announces
(``features`` …) and what it handles (``hooks()``: a list of
:class:`Hook` — event name, handler, priority) are data a reader can find at
the top of the file, and every handler is a method with a name. The host
(``server/core/hosts.py``) instantiates the modules in order, checks that
each one's dependencies came before it, and registers the hooks; an unknown
event name is an error at start-up (``server/core/events.py``), never a
handler that silently never runs.

Modules never import each other: they talk through events, and through the
core's services (the roster service, the router).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable

if TYPE_CHECKING:
    from .hosts import Host


@dataclass(frozen=True)
class Hook:
    """Call *handler(payload)* when *event* fires; higher *priority* first.
    A handler that returns True has handled the event and stops the chain."""
    event: str
    handler: Callable[[Any], Any]
    priority: int = 0


def iq(kind: str, dest: str, namespace: str, name: str, handler: Callable,
       priority: int = 0) -> Hook:
    """The hook of an IQ get/set whose payload is ``{namespace}name``,
    addressed to *dest* (``host``, ``self``, ``bare``, ``full`` or
    ``unauthenticated``; see ``server/core/router.py``)."""
    return Hook(f"iq-{kind}/{dest}/{namespace}:{name}", handler, priority)


class Module:
    """A feature of one host. Subclasses set the class attributes they need,
    take what they need from *host* in ``__init__`` and list their hooks."""

    #: the name in the host's module list (the file's name)
    name: ClassVar[str]
    #: modules that must be loaded before this one
    depends: ClassVar[tuple[str, ...]] = ()
    #: XEP-0030 features of the domain itself …
    features: ClassVar[tuple[str, ...]] = ()
    #: … and of every account (a bare JID), e.g. PEP's
    account_features: ClassVar[tuple[str, ...]] = ()
    #: disco identities of every account: (category, type)
    account_identities: ClassVar[tuple[tuple[str, str], ...]] = ()
    #: stream features offered after authentication: (namespace, name)
    stream_features: ClassVar[tuple[tuple[str, str], ...]] = ()

    def __init__(self, host: "Host"):
        self.host = host

    def hooks(self) -> Iterable[Hook]:
        return ()
