"""RosterStore.update_roster on a real SQLite file, and the roster service
(server/core/rosters.py) in process on top of it: one transaction per change,
a version per changed item, the size limit inside the transaction, nothing
written when decide fails, pushes in version order, no lock left behind."""

import asyncio
from types import SimpleNamespace

import pytest

from server.core.events import EventBus
from server.core.rosters import Rosters
from server.xmpp.jid import JID
from server.xmpp.roster import RosterDecision, RosterFull, RosterItem
from server.xmpp.sasl import make_all_credentials
from storage.sqlite import SQLiteStorage

H = "localhost"


@pytest.fixture
async def store(tmp_path):
    s = SQLiteStorage(tmp_path / "x.sqlite", synchronous="normal")
    await s.open()
    await s.create_user(H, "ann", make_all_credentials("pw", iterations=4096))
    yield s
    await s.close()


def put(**items):
    """decide: store these items (jid → RosterItem or None)."""
    def decide(entries):
        return RosterDecision(items=dict(items), result=dict(entries))
    return decide


def add(*jids):
    return lambda entries: RosterDecision(items={j: RosterItem(j) for j in jids})


async def test_each_changed_item_gets_its_own_version(store):
    entries, written = await store.update_roster(H, "ann", ["a@x", "b@x"], add("a@x", "b@x"))
    assert [(j, v) for j, _, v in written] == [("a@x", 1), ("b@x", 2)]
    assert (await store.get_roster(H, "ann"))[0] == 2
    # removing something absent is no change; an item given again is one
    _, written = await store.update_roster(H, "ann", ["a@x", "c@x"],
                                           put(**{"c@x": None, "a@x": RosterItem("a@x", "A")}))
    assert [(j, v) for j, _, v in written] == [("a@x", 3)]
    assert await store.update_roster(H, "ann", ["a@x"], lambda entries: None) == (None, [])
    version, items = await store.get_roster(H, "ann")
    assert version == 3 and items["a@x"].name == "A" and set(items) == {"a@x", "b@x"}


async def test_decide_sees_items_and_requests_and_changes_requests(store):
    await store.save_roster_change(H, "ann", "a@x", RosterItem("a@x", subscription="to"),
                                   pending_in="<presence type='subscribe'/>")
    seen = {}

    def decide(entries):
        seen.update(entries)
        return RosterDecision(requests={"a@x": None, "b@x": "<presence id='b'/>"})
    _, written = await store.update_roster(H, "ann", ["a@x", "b@x"], decide)
    assert written == []                               # requests only: no version, no push
    assert seen["a@x"].item.subscription == "to" and seen["a@x"].request is not None
    assert seen["b@x"].item is None and seen["b@x"].request is None
    assert await store.get_pending_in(H, "ann") == {"b@x": "<presence id='b'/>"}


@pytest.mark.hostile
async def test_a_failing_decide_writes_nothing_and_spares_its_batch(store):
    def broken(entries):
        raise RuntimeError("no")

    def stranger(entries):
        return RosterDecision(items={"z@x": RosterItem("z@x")})
    outcomes = await asyncio.gather(
        store.update_roster(H, "ann", ["a@x"], add("a@x")),
        store.update_roster(H, "ann", ["b@x"], broken),
        store.update_roster(H, "ann", ["c@x"], stranger),
        store.update_roster(H, "ann", ["d@x"], add("d@x")), return_exceptions=True)
    assert isinstance(outcomes[1], RuntimeError) and isinstance(outcomes[2], ValueError)
    version, items = await store.get_roster(H, "ann")
    assert set(items) == {"a@x", "d@x"} and version == 2


@pytest.mark.hostile
async def test_the_limit_is_checked_in_the_transaction(store):
    await store.update_roster(H, "ann", ["a@x", "b@x"], add("a@x", "b@x"), max_items=2)
    with pytest.raises(RosterFull):
        await store.update_roster(H, "ann", ["c@x"], add("c@x"), max_items=2)
    # at the limit: changing an item, or replacing one with another, still works
    await store.update_roster(H, "ann", ["a@x"], put(**{"a@x": RosterItem("a@x", "A")}),
                              max_items=2)
    await store.update_roster(H, "ann", ["b@x", "c@x"],
                              put(**{"b@x": None, "c@x": RosterItem("c@x")}), max_items=2)
    assert set((await store.get_roster(H, "ann"))[1]) == {"a@x", "c@x"}


class FakeSession:
    def __init__(self, resource, interested=True):
        self.jid = JID("ann", H, resource)
        self.roster_requested = interested
        self.sent = []

    def send(self, element):
        self.sent.append(element)


def service(store, limit=10_000, sessions=()):
    host = SimpleNamespace(domain=H, storage=store, events=EventBus(),
                           global_config=SimpleNamespace(im=SimpleNamespace(
                               max_roster_items=limit)),
                           user_sessions=lambda user: {s.jid.resource: s for s in sessions})
    return Rosters(host)


def pushed_versions(session) -> list[tuple[str, int]]:
    out = []
    for iq in session.sent:
        query = iq.find("{jabber:iq:roster}query")
        out.append((query[0].get("jid"), int(query.get("ver"))))
    return out


async def test_concurrent_updates_respect_the_limit_and_push_in_order(store):
    phone, lazy = FakeSession("phone"), FakeSession("lazy", interested=False)
    rosters = service(store, limit=20, sessions=(phone, lazy))
    changes = []
    rosters.host.events.on("roster-changed", changes.append)
    outcomes = await asyncio.gather(*(rosters.update("ann", [f"c{i}@x"], add(f"c{i}@x"))
                                      for i in range(64)), return_exceptions=True)
    assert sum(isinstance(o, RosterFull) for o in outcomes) == 44
    assert len((await rosters.get("ann"))[1]) == 20
    versions = [v for _, v in pushed_versions(phone)]
    assert versions == list(range(1, 21)) and lazy.sent == []
    assert [(c.jid, c.version) for c in changes] == pushed_versions(phone)
    assert len(rosters.locks) == 0                    # every lock was let go


async def test_updates_of_one_item_follow_each_other(store):
    """Read-modify-write of one item from many tasks: no update is lost."""
    rosters = service(store)

    def bump(entries):
        item = entries["a@x"].item or RosterItem("a@x", "0")
        return RosterDecision(items={"a@x": RosterItem("a@x", str(int(item.name) + 1))})
    await asyncio.gather(*(rosters.update("ann", ["a@x"], bump) for _ in range(30)))
    assert (await rosters.item("ann", "a@x")).name == "30"
    assert (await rosters.get("ann"))[0] == 30


async def test_a_change_committed_after_decide_saw_the_entry_is_decided_again(store):
    """No locks here: the updates all decide on the same committed entry, and
    the write finds it changed by the ones before it and decides again."""
    def bump(entries):
        item = entries["a@x"].item or RosterItem("a@x", "0")
        return RosterDecision(items={"a@x": RosterItem("a@x", str(int(item.name) + 1))})
    await asyncio.gather(*(store.update_roster(H, "ann", ["a@x"], bump) for _ in range(30)))
    assert (await store.get_roster_item(H, "ann", "a@x")).name == "30"
