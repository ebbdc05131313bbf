"""What the server needs from storage: one ``typing.Protocol`` per feature store.

The server only talks to these interfaces; ``storage/sqlite.py`` is the
implementation we ship. Every method is a coroutine, and every method that
changes data is atomic: it either happens whole or not at all.

Users are addressed by ``(host, username)`` with both parts already prepared
(``server.xmpp.jid``); stores do no JID handling of their own.
"""

from __future__ import annotations

from typing import Mapping, Protocol

from server.xmpp.sasl import ScramCredentials


class StorageError(Exception):
    """Storage cannot be used (bad file, schema from a newer xferd, …)."""


class AccountStore(Protocol):
    """Accounts and their SCRAM credentials (never the password itself)."""

    async def create_user(self, host: str, username: str,
                          credentials: Mapping[str, ScramCredentials]) -> bool:
        """Create the account; False if it already exists."""

    async def user_exists(self, host: str, username: str) -> bool: ...

    async def get_credentials(self, host: str, username: str,
                              mechanism: str) -> ScramCredentials | None:
        """Credentials for one SCRAM mechanism, None if no such user/mechanism."""

    async def set_credentials(self, host: str, username: str,
                              credentials: Mapping[str, ScramCredentials]) -> bool:
        """Replace all credentials (password change); False if no such user."""

    async def delete_user(self, host: str, username: str) -> bool:
        """Delete the account and everything stored for it; False if absent."""

    async def list_users(self, host: str) -> list[str]:
        """Usernames of *host*, sorted."""


class Storage(AccountStore, Protocol):
    """Everything the server stores. Later issues add rosters, offline
    messages, private XML, vCards, PEP and transfer jobs as further stores."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...
