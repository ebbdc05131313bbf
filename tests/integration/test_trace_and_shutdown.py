"""The stanza trace a person reads to learn the protocol, and graceful shutdown."""

import asyncio
import base64
import socket
import ssl
import time

import pytest

from tests.harness import RawClient, header, login


async def test_trace_shows_stanzas_labelled_and_hides_secrets(make_server):
    srv = make_server(trace=True)
    srv.adduser("tess@localhost", "s3cret-Passw0rd")
    plain = await login(srv, "tess@localhost/tr", "s3cret-Passw0rd", mechanism="PLAIN")
    await plain.ping_server()
    await plain.close()
    scram = await login(srv, "tess@localhost/sc", "s3cret-Passw0rd")
    await scram.close()
    raw = await RawClient.connect(srv.c2s_port)
    await raw.secure(srv.cert())
    raw.send("<iq type='set' id='r'><query xmlns='jabber:iq:register'><username>uma</username>"
             "<password>register-Secret</password></query></iq>")
    await raw.expect("iq")
    await raw.close()
    # every stanza is traced before it is handled or sent (and stderr is
    # line-buffered), so the answer above means its lines are in the log
    log = srv.log()
    # labelled, direction-tagged, pretty-printed stanzas
    assert "xferd.trace: c2s#" in log
    assert "tess@localhost/tr recv" in log and "tess@localhost/tr send" in log
    assert '<ping xmlns="urn:xmpp:ping"/>' in log
    assert "<mechanism>SCRAM-SHA-256</mechanism>" in log
    # secrets never reach the log
    token = base64.b64encode(b"\0tess\0s3cret-Passw0rd").decode()
    for secret in ("s3cret-Passw0rd", token, "register-Secret"):
        assert secret not in log
    assert "[redacted]" in log


async def test_no_trace_by_default(server):
    client = await login(server, "alice@localhost/quiet", "alice-pass")
    await client.ping_server()
    await client.close()
    assert "xferd.trace" not in server.log()


@pytest.mark.hostile
async def test_sigterm_closes_streams_with_system_shutdown_and_exits_0(make_server):
    srv = make_server()
    srv.adduser("vic@localhost", "vic-pass")
    client = await login(srv, "vic@localhost/s", "vic-pass")
    code = await asyncio.to_thread(srv.stop)
    await asyncio.wait_for(client.gone, 10)
    assert client.stream_errors == ["system-shutdown"]
    assert code == 0
    assert "xferd stopped" in srv.log()


def _timed_stop(srv) -> tuple[int, float]:
    """SIGTERM, then the seconds until the process has exited."""
    started = time.monotonic()
    code = srv.stop(timeout=15)
    return code, time.monotonic() - started


async def test_sigterm_without_clients_exits_within_a_second(make_server):
    srv = make_server()
    # how long shutdown takes is what this test checks, so a deadline is the point
    code, took = await asyncio.to_thread(_timed_stop, srv)
    assert code == 0 and "xferd stopped" in srv.log()
    assert took < 1.0, f"{took:.2f} s to stop"


@pytest.mark.hostile
async def test_sigterm_with_a_peer_that_never_reads_ends_after_the_grace(make_server):
    """A TLS peer that never reads never answers our close: the stop waits its
    5 s grace for it, then cuts it off and finishes (it used to wait 5 s more
    for the same close, past the harness's 10 s, and was killed)."""
    srv = make_server()
    # a plain blocking socket: an asyncio one would answer the TLS close by itself
    context = ssl.create_default_context(cafile=str(srv.cert()))
    with socket.create_connection(("127.0.0.1", srv.direct_tls_port)) as tcp, \
            context.wrap_socket(tcp, server_hostname="localhost") as peer:
        peer.sendall(header())
        peer.settimeout(10)
        got = b""
        while b"</stream:features>" not in got:
            got += peer.recv(65536)
        # from here on the peer reads nothing
        code, took = await asyncio.to_thread(_timed_stop, srv)
    assert code == 0 and "xferd stopped" in srv.log()
    assert took < 7.5, f"{took:.2f} s to stop"
