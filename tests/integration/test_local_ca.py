"""The local CA (``xferd cert``, server/io/local_ca.py): made once, restricted by
name constraints, trusted alone by a verifying client over the server's real
STARTTLS; replaced certificates taken without a restart; ``xferd migrate`` and
``xferd transfer`` trusting it for the local domains."""

import datetime
import ipaddress
import os
import ssl
import subprocess
import sys

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from server.io import local_ca
from server.io.tls import generate_self_signed
from tests.harness import RawClient, _env, write_config

TLS_NS = "urn:ietf:params:xml:ns:xmpp-tls"
DOMAINS = ("a.localhost", "b.localhost", "localhost")


def ca_only(ca_cert) -> ssl.SSLContext:
    """A client that trusts the local CA and nothing else (no system store),
    checking the host name (PROTOCOL_TLS_CLIENT does both by default)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(ca_cert))
    return ctx


async def starttls_certificate(port: int, domain: str, ctx: ssl.SSLContext) -> x509.Certificate:
    """RFC 6120 §5.4: header to *domain*, <starttls/>, <proceed/>, the handshake
    with *domain* as the reference identity (§13.7.2.1); the server's certificate."""
    raw = await RawClient.connect(port)
    try:
        features = await raw.open_stream(to=domain)
        assert features.find(f"{{{TLS_NS}}}starttls") is not None
        raw.send(f"<starttls xmlns='{TLS_NS}'/>")
        await raw.expect("proceed")
        await raw.writer.start_tls(ctx, server_hostname=domain)
        der = raw.writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return x509.load_der_x509_certificate(der)
    finally:
        await raw.close()


async def direct_tls_certificate(port: int, domain: str, ctx: ssl.SSLContext):
    """XEP-0368: TLS from the first byte, the domain in SNI."""
    raw = await RawClient.connect(port)          # plain TCP, then the handshake
    try:
        await raw.writer.start_tls(ctx, server_hostname=domain)
        der = raw.writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return x509.load_der_x509_certificate(der)
    finally:
        await raw.close()


def dns_names(cert: x509.Certificate) -> list[str]:
    return cert.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)


def ca_cert_path(srv):
    return srv.data_dir / "ca" / local_ca.CA_CERT


def test_cert_makes_the_ca_once_private_and_constrained(make_server, tmp_path):
    """RFC 5280 §4.2.1.10: "Conforming CAs MUST mark this extension as critical";
    "Any DNS name that can be constructed by simply adding zero or more labels
    to the left-hand side of the name satisfies the name constraint."
    RFC 6761 §6.3: localhost names are the local machine's. The CA may sign
    for localhost and the names below it, for no IP address, and no sub-CA."""
    srv = make_server(start=False, domains=DOMAINS)
    made = srv.cli("cert")
    assert made.returncode == 0, made.stderr
    out = made.stdout
    assert "made a new local CA for localhost and the names below them" in out
    for needle in ("update-ca-certificates", "certutil -d sql:$HOME/.pki/nssdb -A -t C,,",
                   "Android", "Install a certificate → CA certificate"):
        assert needle in out
    ca_dir = srv.data_dir / "ca"
    key = ca_dir / local_ca.CA_KEY
    assert key.stat().st_mode & 0o777 == 0o600
    assert ca_dir.stat().st_mode & 0o777 == 0o700
    ca = x509.load_pem_x509_certificate(ca_cert_path(srv).read_bytes())
    basic = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca and basic.value.path_length == 0
    constraints = ca.extensions.get_extension_for_class(x509.NameConstraints)
    assert constraints.critical
    assert constraints.value.permitted_subtrees == [x509.DNSName("localhost")]
    assert set(constraints.value.excluded_subtrees) == {
        x509.IPAddress(ipaddress.ip_network("0.0.0.0/0")),
        x509.IPAddress(ipaddress.ip_network("::/0"))}
    for domain in DOMAINS:
        assert f"{domain}: certificate " in out
        leaf = x509.load_pem_x509_certificate(
            (srv.data_dir / "certs" / f"{domain}.crt").read_bytes())
        assert dns_names(leaf) == [domain]
        leaf.verify_directly_issued_by(ca)

    # once: a second run keeps the CA (same key, same certificate) and the certificates
    key_bytes, fingerprint = key.read_bytes(), ca.fingerprint(hashes.SHA256())
    again = srv.cli("cert")
    assert again.returncode == 0, again.stderr
    assert "local CA for localhost" in again.stdout and "made a new" not in again.stdout
    assert again.stdout.count(": kept ") == len(DOMAINS)
    assert key.read_bytes() == key_bytes
    assert x509.load_pem_x509_certificate(
        ca_cert_path(srv).read_bytes()).fingerprint(hashes.SHA256()) == fingerprint

    # a certificate an older xferd made self-signed is kept, and named for --force
    certs = srv.data_dir / "certs"
    generate_self_signed("b.localhost", certs / "b.localhost.crt", certs / "b.localhost.key")
    kept = srv.cli("cert")
    assert kept.returncode == 0, kept.stderr
    assert "b.localhost: kept " in kept.stdout and \
        "b.localhost.crt — not signed by this CA: --force replaces it" in kept.stdout

    # the key is private from the first byte, whatever the umask (not only via the CLI's)
    old = os.umask(0)
    try:
        local_ca.create(tmp_path / "open-umask", ["localhost"])
    finally:
        os.umask(old)
    assert (tmp_path / "open-umask" / local_ca.CA_KEY).stat().st_mode & 0o777 == 0o600


def test_a_domain_outside_the_ca_needs_a_new_ca(make_server):
    """Name constraints are fixed when the CA is made: a domain outside them
    is refused with the way out, and --new-ca makes a CA that covers it."""
    srv = make_server(start=False, domains=("a.localhost",))
    assert srv.cli("cert").returncode == 0
    old = ca_cert_path(srv).read_bytes()
    refused = srv.cli("cert", "xmpp.lan")
    assert refused.returncode == 1
    assert "may sign for localhost" in refused.stderr and "not xmpp.lan" in refused.stderr
    assert "`xferd cert xmpp.lan --new-ca`" in refused.stderr
    assert not (srv.data_dir / "certs" / "xmpp.lan.crt").exists()
    renewed = srv.cli("cert", "xmpp.lan", "--new-ca")
    assert renewed.returncode == 0, renewed.stderr
    assert "made a new local CA for localhost, xmpp.lan" in renewed.stdout
    assert ca_cert_path(srv).read_bytes() != old
    ca = local_ca.load(srv.data_dir / "ca")
    assert ca.covers("xmpp.lan") and ca.covers("a.localhost") and not ca.covers("lan")


async def test_a_client_trusting_only_the_ca_verifies_each_domain(make_server):
    """RFC 6120 §13.7.2.1 / RFC 6125 §6.4: the client checks the server's
    certificate against the domain it asked for. A first start without
    certificates makes the CA and has it sign each served domain's."""
    srv = make_server(domains=DOMAINS)
    ctx = ca_only(ca_cert_path(srv))
    for domain in DOMAINS:
        cert = await starttls_certificate(srv.c2s_port, domain, ctx)
        assert dns_names(cert) == [domain]
        cert = await direct_tls_certificate(srv.direct_tls_port, domain, ctx)
        assert dns_names(cert) == [domain]
    # hostname checking is on: a name the server does not serve gets its first
    # domain's certificate (signed by the CA all the same), and that is refused
    with pytest.raises(ssl.SSLCertVerificationError) as refused:
        await direct_tls_certificate(srv.direct_tls_port, "c.localhost", ctx)
    assert "Hostname mismatch" in refused.value.verify_message


def _issue(ca: local_ca.LocalCA, names: list, directory, stem: str):
    """A certificate the CA's key signs whatever the names (the CA's own
    issue() refuses names outside its constraints)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, stem)]))
            .issuer_name(ca.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca.key, hashes.SHA256()))
    cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    local_ca.write_private_key(key_path, key)
    local_ca.write_certificates(cert_path, cert, ca.certificate)
    return str(cert_path), str(key_path)


@pytest.mark.parametrize("domain, names, violation", [
    ("example.com", [x509.DNSName("example.com")], "permitted subtree violation"),
    ("c.localhost", [x509.DNSName("c.localhost"),
                     x509.IPAddress(ipaddress.ip_address("192.0.2.1"))],
     "excluded subtree violation"),
])
async def test_the_constraints_hold_for_a_certificate_the_ca_key_signed(
        make_server, tmp_path, domain, names, violation):
    """RFC 5280 §4.2.1.10 / §6.1.3 (b), (c): a certificate under a name outside
    the permitted subtrees, or with a name inside an excluded one, fails path
    validation — even when the CA's own key signed it. So trusting the CA
    cannot make a client accept a certificate for anything but localhost."""
    srv = make_server(start=False, domains=("a.localhost", domain))
    ca = local_ca.create(srv.data_dir / "ca", ["a.localhost"])     # made for localhost only
    cert, key = _issue(ca, names, tmp_path, domain)
    srv.sections[f'hosts."{domain}"'].update(cert=cert, key=key)
    write_config(srv.config, srv.sections)
    srv.start()
    ctx = ca_only(ca.cert_path)
    assert dns_names(await starttls_certificate(srv.c2s_port, "a.localhost", ctx)) == \
        ["a.localhost"]
    with pytest.raises(ssl.SSLCertVerificationError) as refused:
        await starttls_certificate(srv.c2s_port, domain, ctx)
    assert violation in refused.value.verify_message


async def test_a_replaced_certificate_is_used_without_a_restart(make_server):
    """`xferd cert DOMAIN --force` while the server runs: the next handshake,
    STARTTLS and direct TLS, presents the new certificate."""
    srv = make_server(domains=("a.localhost", "b.localhost"))
    ctx = ca_only(ca_cert_path(srv))
    before = await starttls_certificate(srv.c2s_port, "b.localhost", ctx)
    first = await starttls_certificate(srv.c2s_port, "a.localhost", ctx)
    replaced = srv.cli("cert", "b.localhost", "--force")
    assert replaced.returncode == 0, replaced.stderr
    on_disk = x509.load_pem_x509_certificate((srv.data_dir / "certs" / "b.localhost.crt")
                                             .read_bytes())
    assert on_disk.serial_number != before.serial_number
    after = await starttls_certificate(srv.c2s_port, "b.localhost", ctx)
    assert after.serial_number == on_disk.serial_number
    direct = await direct_tls_certificate(srv.direct_tls_port, "b.localhost", ctx)
    assert direct.serial_number == on_disk.serial_number
    # the other domain kept its certificate; the same process served all of it
    assert (await starttls_certificate(srv.c2s_port, "a.localhost", ctx)).serial_number == \
        first.serial_number
    assert srv.alive()


async def test_sighup_takes_certificates_from_new_paths(make_server, tmp_path):
    """SIGHUP reads the config again: a host's cert/key pointed at other
    files are served from then on (the reload is acknowledged in the ports file)."""
    srv = make_server(domains=("a.localhost",))
    ctx = ca_only(ca_cert_path(srv))
    before = await starttls_certificate(srv.c2s_port, "a.localhost", ctx)
    ca = local_ca.load(srv.data_dir / "ca")
    cert, key = tmp_path / "renewed.crt", tmp_path / "renewed.key"
    ca.issue("a.localhost", cert, key)
    srv.sections['hosts."a.localhost"'].update(cert=str(cert), key=str(key))
    write_config(srv.config, srv.sections)
    srv.reload()
    renewed = x509.load_pem_x509_certificate(cert.read_bytes())
    after = await starttls_certificate(srv.c2s_port, "a.localhost", ctx)
    assert after.serial_number == renewed.serial_number != before.serial_number
    assert "certificates reloaded for a.localhost" in srv.log()


def tool(srv, *args: str, config=None) -> subprocess.CompletedProcess:
    """``xferd COMMAND -c CONFIG ARGS`` with both demo passwords in the environment."""
    command, *rest = args
    env = dict(_env(), XFERD_OLD_PASSWORD="old-pw", XFERD_NEW_PASSWORD="new-pw")
    return subprocess.run([sys.executable, "-m", "server", command, "-c",
                           str(config or srv.config), *rest], cwd=srv.workdir, env=env,
                          capture_output=True, text=True, timeout=120)


def test_migrate_and_transfer_trust_the_local_ca_for_local_domains(make_server, tmp_path):
    """With the config's local CA present, `xferd migrate` and `xferd transfer`
    need no certificate option for the domains it was made for; without it, the
    TLS error names the option that fixes it."""
    srv = make_server(domains=("a.localhost", "b.localhost"))
    srv.adduser("mia@a.localhost", "old-pw")
    srv.adduser("mia@b.localhost", "new-pw")
    where = ["--old-host", "127.0.0.1", "--old-port", str(srv.c2s_port),
             "--new-host", "127.0.0.1", "--new-port", str(srv.c2s_port)]
    move = ["migrate", "--from", "mia@a.localhost", "--to", "mia@b.localhost", *where,
            "--dry-run", "--state", str(tmp_path / "state.json")]
    planned = tool(srv, *move)
    assert planned.returncode == 0, planned.stderr
    assert "CERTIFICATE_VERIFY_FAILED" not in planned.stderr
    status = tool(srv, "transfer", "status", "--old", "mia@a.localhost",
                  "--old-host", "127.0.0.1", "--old-port", str(srv.c2s_port))
    assert "no transfer recorded for mia@a.localhost" in status.stdout, status.stderr

    # a config whose data directory holds no CA: the system store alone, which fails
    elsewhere = tmp_path / "elsewhere.toml"
    elsewhere.write_text(f'[server]\ndata_dir = "{tmp_path / "empty"}"\n')
    failed = tool(srv, *move, config=elsewhere)
    assert failed.returncode == 2
    assert "cannot log in to the old account mia@a.localhost: tls-failure" in failed.stderr
    assert "CERTIFICATE_VERIFY_FAILED" in failed.stderr
    assert "--old-cafile FILE" in failed.stderr and "--cafile FILE" in failed.stderr
    # … and the option it names works
    given = tool(srv, *move, "--cafile", str(ca_cert_path(srv)), config=elsewhere)
    assert given.returncode == 0, given.stderr

    # a certificate the local CA did not sign (self-signed, as older xferds made them)
    certs = srv.data_dir / "certs"
    generate_self_signed("a.localhost", certs / "a.localhost.crt", certs / "a.localhost.key")
    stale = tool(srv, *move)
    assert stale.returncode == 2
    assert "but did not sign its certificate" in stale.stderr
    assert "`xferd cert a.localhost --force`" in stale.stderr
