"""The accounts and rosters a scenario needs, described once for both servers.

Each server writes them into its own storage before it starts (xferd through
its storage API, Prosody as the Lua data files of its ``internal`` storage),
because having clients build a 5,000-item roster or 2,000 mutual
subscriptions over XMPP would take longer than the measurement itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Item:
    """One roster item (RFC 6121 §2.1.2)."""
    jid: str
    subscription: str = "both"
    name: str | None = None
    groups: tuple[str, ...] = ()


@dataclass
class Account:
    domain: str
    user: str
    roster: list[Item] = field(default_factory=list)

    @property
    def jid(self) -> str:
        return f"{self.user}@{self.domain}"


def plain(domain: str, users: list[str]) -> list[Account]:
    """Accounts with empty rosters."""
    return [Account(domain, user) for user in users]
