"""The ejabberd harness itself (tests/ejabberd.py), without xferd.

They prove that the private ejabberd listens only where we told it — its
c2s and s2s ports and its Erlang distribution port, all on 127.0.0.1, no
epmd, none of the packaged service's ports — that its commands reach this
node and no other, and that it accepts our users over STARTTLS; so a failure
in the ejabberd interop tests is not the harness.
"""

import os
from pathlib import Path

import pytest

from tests.ejabberd import EJABBERD_DOMAIN
from tests.harness import login

pytestmark = pytest.mark.interop


def listening_sockets(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket *pid* listens on, from /proc (IPv4 and IPv6)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    found = set()
    for table, width in (("tcp", 8), ("tcp6", 32)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:          # 0A: TCP_LISTEN
                continue
            address, port = local.split(":")
            if width == 8:                                    # little-endian IPv4
                address = ".".join(str(int(address[i:i + 2], 16)) for i in (6, 4, 2, 0))
            found.add((address, int(port, 16)))
    return found


def test_ejabberd_listens_only_on_its_loopback_ports(ejabberd):
    assert ejabberd.alive()
    assert listening_sockets(ejabberd.proc.pid) == {
        ("127.0.0.1", ejabberd.c2s_port), ("127.0.0.1", ejabberd.s2s_port),
        ("127.0.0.1", ejabberd.dist_port)}
    assert ejabberd.errors() == []


def test_commands_reach_the_private_node(ejabberd, ejabberd_user):
    eve = ejabberd_user("eve")
    done = ejabberd.ctl("registered_users", EJABBERD_DOMAIN)
    assert done.returncode == 0, done
    assert eve.partition("@")[0] in done.stdout.split()
    done = ejabberd.ctl("status")
    assert done.returncode == 0 and ejabberd.node in done.stdout, done


async def test_client_logs_in_over_starttls_and_pings(ejabberd, ejabberd_user):
    eve = ejabberd_user("eve")
    client = await login(ejabberd, f"{eve}/harness", "pw")
    try:
        assert client.boundjid.bare == eve
        await client.ping_server()
        assert await client.fetch_roster() == {}
    finally:
        await client.close()
    refused = await login(ejabberd, f"{eve}/harness", "wrong", expect="failed_auth")
    await refused.close()
