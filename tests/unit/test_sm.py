"""XEP-0198 without I/O (server/xmpp/sm.py): counters mod 2^32, the queue
of unacknowledged stanzas, 'h' values, resumption times, the elements."""

import asyncio

import pytest

from server.xmpp import sm
from server.xmpp.stream import serialize


def sent(n: int) -> list[sm.Sent]:
    return [sm.Sent(f"<message id='{i}'/>", 1000.0 + i, "message") for i in range(n)]


def test_acks_free_the_oldest_stanzas_and_count_in_total():
    queue = sm.Unacked()
    for item in sent(5):
        queue.push(item)
    assert (len(queue), queue.sent, queue.acked) == (5, 5, 0)
    assert queue.ack(2) == 2
    assert [s.text for s in queue] == ["<message id='2'/>", "<message id='3'/>",
                                       "<message id='4'/>"]
    assert queue.ack(2) == 0                  # the same h again frees nothing
    assert queue.ack(5) == 3 and len(queue) == 0 and queue.size == 0


def test_an_ack_of_more_than_was_sent_is_refused_and_changes_nothing():
    queue = sm.Unacked()
    for item in sent(3):
        queue.push(item)
    queue.ack(1)
    with pytest.raises(sm.HandledCountTooHigh) as info:
        queue.ack(4)
    assert (info.value.h, info.value.sent) == (4, 3)
    assert len(queue) == 2 and queue.acked == 1
    with pytest.raises(sm.HandledCountTooHigh):
        queue.ack(0)                          # "going back" is 2^32 - 1 ahead


def test_counters_wrap_at_two_to_the_32():
    queue = sm.Unacked()
    queue.sent = queue.acked = sm.MODULUS - 2
    for item in sent(4):
        queue.push(item)
    assert queue.sent == 2                    # 2^32 - 2 + 4, mod 2^32
    assert queue.ack(sm.MODULUS - 1) == 1
    assert queue.ack(1) == 2                  # across the wrap
    assert len(queue) == 1
    assert sm.increment(sm.MODULUS - 1) == 0


@pytest.mark.parametrize("text,value", [("0", 0), ("17", 17), ("4294967295", 2 ** 32 - 1)])
def test_counts(text, value):
    assert sm.parse_count(text) == value


@pytest.mark.parametrize("text", [None, "", "-1", "4294967296", "1.5", "x", " 1",
                                  "00000000001"])
def test_bad_counts(text):
    with pytest.raises(sm.BadCount):
        sm.parse_count(text)


@pytest.mark.parametrize("requested,expected", [
    (None, 300), ("60", 60), ("100000", 600), ("0", 1), ("junk", 300), ("9" * 40, 300)])
def test_resume_timeout_is_the_clients_wish_within_our_cap(requested, expected):
    assert sm.resume_timeout(requested, 300.0, 600.0) == expected


def test_booleans_as_xml_schema_has_them():
    assert sm.is_true("true") and sm.is_true("1")
    assert not sm.is_true("false") and not sm.is_true("yes") and not sm.is_true(None)


def test_drain_takes_everything_in_order():
    queue = sm.Unacked()
    for item in sent(3):
        queue.push(item)
    assert [s.at for s in queue.drain()] == [1000.0, 1001.0, 1002.0]
    assert len(queue) == 0 and queue.sent == 3


def test_elements_on_the_wire():
    assert serialize(sm.enabled('abc', 300)) == \
        '<enabled xmlns="urn:xmpp:sm:3" id="abc" resume="true" max="300"/>'
    assert serialize(sm.enabled(None, None)) == '<enabled xmlns="urn:xmpp:sm:3"/>'
    assert serialize(sm.failed('item-not-found', 7)) == (
        '<failed xmlns="urn:xmpp:sm:3" h="7"><item-not-found '
        'xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/></failed>')
    assert serialize(sm.resumed('abc', 4)) == \
        '<resumed xmlns="urn:xmpp:sm:3" previd="abc" h="4"/>'
    assert serialize(sm.ack(9)) == '<a xmlns="urn:xmpp:sm:3" h="9"/>'
    too_high = serialize(sm.handled_count_too_high(sm.HandledCountTooHigh(10, 8)))
    assert too_high == '<handled-count-too-high xmlns="urn:xmpp:sm:3" h="10" send-count="8"/>'


def test_the_config_section_and_its_limits():
    from server.config import ConfigError, parse
    config = parse({"stream_management": {"resume_timeout": 30, "max_unacked": 50}})
    assert config.stream_management.resume_timeout == 30.0
    assert config.stream_management.max_unacked == 50
    assert config.stream_management.enabled is True
    for key, bad in (("max_unacked", 0), ("resume_timeout", 0), ("ack_request_after", 0),
                     ("enabled", "yes")):
        with pytest.raises(ConfigError, match=f"stream_management.{key}"):
            parse({"stream_management": {key: bad}})


class Recorder:
    """Stands for the session: what SessionSM sends on it."""
    closing = False

    def __init__(self):
        self.sent = []
        self.sent_something = asyncio.Event()

    def send(self, element):
        self.sent.append(element.tag.rpartition("}")[2])
        self.sent_something.set()


def session_sm(**settings):
    from server.config import StreamManagementConfig
    from server.io.stream_management import SessionSM
    return SessionSM(StreamManagementConfig(**settings))


async def test_an_ack_is_asked_for_after_n_stanzas_once_per_count():
    state, session = session_sm(ack_request_after=2, ack_request_delay=60), Recorder()
    for i in range(2):
        state.sent(sm.ack(0), f"<message id='{i}'/>")
        state.after_send(session)
    assert session.sent == ["r"]
    state.sent(sm.ack(0), "<message id='2'/>")
    state.after_send(session)
    assert session.sent == ["r"]                 # one request outstanding at a time
    state.acked(2, session)                      # one left: below the threshold
    assert session.sent == ["r"]
    state.sent(sm.ack(0), "<message id='3'/>")
    state.after_send(session)
    assert session.sent == ["r", "r"]
    state.stop_timer()


async def test_a_lone_stanza_gets_its_request_after_the_delay():
    state, session = session_sm(ack_request_after=5, ack_request_delay=0.1), Recorder()
    state.sent(sm.ack(0), "<message/>")
    state.after_send(session)
    assert session.sent == []
    await asyncio.wait_for(session.sent_something.wait(), 5)
    assert session.sent == ["r"]


def test_the_feature_is_offered_only_when_enabled():
    from types import SimpleNamespace

    from server.config import parse
    from server.modules.stream_management import StreamManagement
    for enabled, offered in ((True, (("urn:xmpp:sm:3", "sm"),)), (False, ())):
        config = parse({"stream_management": {"enabled": enabled}})
        module = StreamManagement(SimpleNamespace(global_config=config))
        assert tuple(module.stream_features) == offered
