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
