"""The stanza trace a person reads to learn the protocol, and graceful shutdown."""

import asyncio
import base64

import pytest

from tests.harness import RawClient, login


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
    await asyncio.sleep(0.3)
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
