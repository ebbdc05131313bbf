"""Fixtures for the interop tests with Prosody and ejabberd (tests/prosody.py, tests/ejabberd.py).

One DNS responder, one Prosody (``prosody.test``) and one federating xferd
(``xferd.test``) per test module, all on 127.0.0.1. The responder serves
``_xmpp-server._tcp`` SRV records for both domains, pointing at their s2s
ports; xferd asks it through ``[s2s] nameserver``, Prosody through its
``unbound`` forwarder. Tests make fresh accounts with ``prosody_user`` and
``xferd_user`` so they never share rosters.

The ejabberd tests get the same from ``ejabberd`` (``ejabberd.test``), its own
federating xferd ``xferd_ej`` (no Prosody started for them) and
``ejabberd_user`` / ``xferd_ej_user``.
"""

import itertools

import pytest

from tests.ejabberd import EJABBERD_DOMAIN, EjabberdProcess, require_ejabberd
from tests.harness import XferdProcess
from tests.prosody import (PROSODY_DOMAIN, XFERD_DOMAIN, DNSResponder, ProsodyProcess,
                           require_prosody)

_numbers = itertools.count(1)


@pytest.fixture(scope="module")
def dns():
    responder = DNSResponder().start()
    yield responder
    responder.stop()


@pytest.fixture(scope="module")
def prosody(dns, tmp_path_factory):
    require_prosody()
    proc = ProsodyProcess(tmp_path_factory.mktemp("prosody"), PROSODY_DOMAIN, dns_port=dns.port)
    dns.add_a(PROSODY_DOMAIN)
    dns.add_srv(PROSODY_DOMAIN, proc.s2s_port, target=PROSODY_DOMAIN)
    proc.start()
    yield proc
    proc.stop()


def federating_xferd(dns, workdir, srv_target: str = XFERD_DOMAIN) -> XferdProcess:
    """An xferd for xferd.test that finds its peers (and is found) through ``dns``.

    *srv_target*: what its SRV record points at; an ejabberd peer needs an IP
    literal (it resolves SRV targets with getaddrinfo, see tests/ejabberd.py)."""
    proc = XferdProcess(workdir, domains=(XFERD_DOMAIN,),
                        # trace: every s2s stanza in xferd.log, to read beside the peer's log
                        overrides={"s2s": {"nameserver": dns.address}}, trace=True)
    proc.start()
    dns.add_a(XFERD_DOMAIN)
    dns.add_srv(XFERD_DOMAIN, proc.s2s_port, target=srv_target)
    return proc


@pytest.fixture(scope="module")
def xferd_fed(dns, prosody, tmp_path_factory):
    """An xferd for xferd.test that finds prosody.test (and is found) through ``dns``."""
    proc = federating_xferd(dns, tmp_path_factory.mktemp("xferd"))
    yield proc
    proc.stop()


def federating_ejabberd(dns, workdir) -> EjabberdProcess:
    """An ejabberd for ejabberd.test that finds its peers (and is found) through ``dns``."""
    require_ejabberd()
    proc = EjabberdProcess(workdir, EJABBERD_DOMAIN, dns_port=dns.port)
    dns.add_a(EJABBERD_DOMAIN)
    dns.add_srv(EJABBERD_DOMAIN, proc.s2s_port, target=EJABBERD_DOMAIN)
    return proc.start()


@pytest.fixture(scope="module")
def ejabberd(dns, tmp_path_factory):
    proc = federating_ejabberd(dns, tmp_path_factory.mktemp("ejabberd"))
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def xferd_ej(dns, ejabberd, tmp_path_factory):
    """An xferd for xferd.test that finds ejabberd.test (and is found) through ``dns``."""
    proc = federating_xferd(dns, tmp_path_factory.mktemp("xferd"), srv_target="127.0.0.1")
    yield proc
    proc.stop()


def _fresh_accounts(server, domain: str):
    """make(prefix, password) registers a fresh account PREFIXn@DOMAIN on *server*."""
    def make(prefix: str = "user", password: str = "pw") -> str:
        jid = f"{prefix}{next(_numbers)}@{domain}"
        server.adduser(jid, password)
        return jid
    return make


@pytest.fixture
def prosody_user(prosody):
    """Register a fresh Prosody account: prosody_user('bob') → 'bob3@prosody.test'."""
    return _fresh_accounts(prosody, PROSODY_DOMAIN)


@pytest.fixture
def xferd_user(xferd_fed):
    """Register a fresh xferd account: xferd_user('alice') → 'alice4@xferd.test'."""
    return _fresh_accounts(xferd_fed, XFERD_DOMAIN)


@pytest.fixture
def ejabberd_user(ejabberd):
    """Register a fresh ejabberd account: ejabberd_user('eve') → 'eve5@ejabberd.test'."""
    return _fresh_accounts(ejabberd, EJABBERD_DOMAIN)


@pytest.fixture
def xferd_ej_user(xferd_ej):
    """Register a fresh account on the xferd that federates with ejabberd."""
    return _fresh_accounts(xferd_ej, XFERD_DOMAIN)
