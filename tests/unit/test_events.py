"""Event names are checked when a handler registers; a misspelled name is an
error at start-up, not a handler that never runs."""

import pytest

from server.core.events import EventBus, UnknownEvent, is_known


@pytest.mark.parametrize("name", [
    "iq-get/host/urn:xmpp:ping:ping",
    "iq-set/self/jabber:iq:roster:query",
    "iq-get/bare/http://jabber.org/protocol/pubsub:pubsub",
    "iq-set/unauthenticated/jabber:iq:register:query",
    "iq/full", "message/bare", "presence/self", "pre-presence", "filter/out",
    "roster-changed", "server-started",
])
def test_known_names(name):
    assert is_known(name)


@pytest.mark.parametrize("name", [
    "roster-change",                        # a typo of roster-changed
    "iq-get/hots/urn:xmpp:ping:ping",       # destination misspelled
    "iq-get/host/ping",                     # no namespace
    "iq-result/host/urn:xmpp:ping:ping",
    "message/everyone", "pre-stanza", "",
])
def test_unknown_names_are_refused(name):
    bus = EventBus()
    with pytest.raises(UnknownEvent):
        bus.on(name, lambda event: None)


async def test_priority_order_and_stop():
    bus, seen = EventBus(), []
    bus.on("message/bare", lambda e: seen.append("low"), priority=-1)
    bus.on("message/bare", lambda e: seen.append("high") or True, priority=5)
    bus.on("message/bare", lambda e: seen.append("mid"))
    assert await bus.fire("message/bare", None) is True
    assert seen == ["high"]


async def test_coroutine_handlers_and_fall_through():
    bus, seen = EventBus(), []

    async def first(event):
        seen.append(("first", event))

    bus.on("presence/bare", first, priority=1)
    bus.on("presence/bare", lambda e: seen.append(("second", e)))
    assert await bus.fire("presence/bare", 7) is False
    assert seen == [("first", 7), ("second", 7)]


# -- payload types ------------------------------------------------------------------------------

def test_every_server_event_has_a_payload_dataclass():
    import dataclasses

    from server.core.events import EVENTS
    from server.core.router import StanzaEvent
    for name, payload in EVENTS.items():
        assert payload is StanzaEvent or dataclasses.is_dataclass(payload), name


def test_resource_bind_is_gone():
    assert not is_known("resource-bind")


async def test_a_checking_bus_refuses_a_payload_of_the_wrong_type():
    from server.core.events import Lifecycle, Login, SessionEvent
    bus, seen = EventBus(check_payloads=True), []
    bus.on("login", seen.append)
    bus.on("presence-initial", seen.append)
    login = Login("session", "juliet")
    await bus.fire("login", login)
    with pytest.raises(TypeError):
        await bus.fire("login", ("session", "juliet"))          # the shape of before
    with pytest.raises(TypeError):
        await bus.fire("presence-initial", Lifecycle("server"))
    with pytest.raises(TypeError):
        await bus.fire("message/bare", SessionEvent("session"))   # stanza events too
    assert seen == [login]


async def test_the_unchecked_bus_does_not_look():
    bus, seen = EventBus(), []
    bus.on("login", seen.append)
    await bus.fire("login", ("session", "juliet"))
    assert seen == [("session", "juliet")]
    assert "fire" not in vars(bus)                  # the plain method, nothing added

