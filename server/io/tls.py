"""TLS: per-domain certificates, SNI, reloading replaced certificates.

Production deployments point ``hosts.<domain>.cert``/``key`` at real
certificates. Without them, a certificate signed by the local CA
(``server/io/local_ca.py``) is made on first start (or with ``xferd cert``)
under ``<data_dir>/certs``; clients trust the CA once. A domain the CA may not
sign for gets a self-signed certificate, as before the CA existed.
"""

from __future__ import annotations

import datetime
import logging
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from . import local_ca

log = logging.getLogger("xferd.tls")

#: the organisation of the certificates generate_self_signed makes
SELF_SIGNED_O = "xferd self-signed"


def generate_self_signed(domain: str, cert_path: Path, key_path: Path,
                         *, days: int = 3650) -> None:
    """Write a self-signed certificate for *domain* (and ``*.domain``).

    The key (EC P-256) is written with mode 0600 before any byte of it is.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, SELF_SIGNED_O)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName(domain), x509.DNSName(f"*.{domain}")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False,
                                         content_commitment=False, data_encipherment=False,
                                         key_agreement=True, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH,
                                                  x509.ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key_bytes = key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key_bytes)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def default_cert_paths(certs_dir: Path, domain: str) -> tuple[Path, Path]:
    return certs_dir / f"{domain}.crt", certs_dir / f"{domain}.key"


def certificates(config) -> dict[str, tuple[Path, Path]]:
    """Every served domain's certificate and key files: the configured ones, or
    those the local CA signed under ``<data_dir>/certs`` (made on first use)."""
    files, missing = {}, []
    for domain, host in config.hosts.items():
        if host.cert or host.key:
            if not (host.cert and host.key):
                raise ValueError(f"hosts.{domain}: set both cert and key, or neither")
            files[domain] = (Path(host.cert), Path(host.key))
            continue
        files[domain] = cert_path, key_path = default_cert_paths(config.certs_dir, domain)
        if cert_path.exists() and key_path.exists():
            _warn_if_self_signed(domain, cert_path, config.ca_dir)
        else:
            missing.append(domain)
    if missing:
        _make_certificates(missing, config.certs_dir, config.ca_dir, list(config.hosts))
    return files


def _make_certificates(domains: list[str], certs_dir: Path, ca_dir: Path,
                       served: list[str]) -> None:
    try:
        ca = local_ca.load(ca_dir)
        if ca is None:
            ca = local_ca.create(ca_dir, served)
            log.warning("made a local certificate authority for %s: %s — clients must trust "
                        "it (`xferd cert` shows how)", ", ".join(ca.permitted), ca.cert_path)
    except (local_ca.CAError, OSError) as exc:
        log.error("no local CA (%s): the certificates made now are self-signed", exc)
        ca = None
    for domain in domains:
        cert_path, key_path = default_cert_paths(certs_dir, domain)
        if ca is None:
            generate_self_signed(domain, cert_path, key_path)
            log.warning("no certificate configured for %s: made a self-signed one in %s",
                        domain, cert_path)
        elif ca.covers(domain):
            ca.issue(domain, cert_path, key_path)
            log.warning("no certificate configured for %s: made %s, signed by the local CA %s",
                        domain, cert_path, ca.cert_path)
        else:
            generate_self_signed(domain, cert_path, key_path)
            log.warning("no certificate configured for %s, which the local CA %s may not sign "
                        "for (it was made for %s): made a self-signed one in %s; "
                        "`xferd cert --new-ca` makes a CA for every configured domain",
                        domain, ca.cert_path, ", ".join(ca.permitted), cert_path)


def _warn_if_self_signed(domain: str, cert_path: Path, ca_dir: Path) -> None:
    """A certificate an older xferd made self-signed still works, but clients
    that trust the local CA do not accept it: say how to replace it."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError):
        return
    made_by = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    if cert.issuer == cert.subject and made_by == [SELF_SIGNED_O]:
        log.warning("%s is self-signed (made before xferd had a local CA): `xferd cert %s "
                    "--force` replaces it with one the local CA in %s signs", cert_path,
                    domain, ca_dir)


def server_context(cert: Path, key: Path, alpn: list[str] | None = None) -> ssl.SSLContext:
    """A server-side context: TLS 1.2+, our certificate, no client certificates."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def _stamp(cert: Path, key: Path) -> tuple:
    """What changes when a file is replaced or rewritten (ctime cannot be set back)."""
    return tuple((s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns, s.st_ctime_ns)
                 for s in (os.stat(cert), os.stat(key)))


class ServerTLS:
    """One SSL context per served domain, chosen by SNI (RFC 6066 §3).

    A client that sends no SNI, or an unknown name, gets the first domain's
    certificate. Replaced certificates are picked up without a restart: before
    each handshake the chosen domain's two files are looked at (two ``stat``
    calls), and if either changed they are loaded anew — a pair that does not
    load (a key written, its certificate not yet) keeps the old context until
    the files change again. :meth:`reload` (SIGHUP) loads them all, and may
    take new paths.
    """

    def __init__(self, certs: dict[str, tuple[Path, Path]], alpn: list[str] | None = None):
        if not certs:
            raise ValueError("no certificates")
        self._alpn = alpn
        self.files = {domain: (Path(c), Path(k)) for domain, (c, k) in certs.items()}
        #: domain → (context, the files' stamp it was loaded from)
        self._loaded = {domain: (server_context(c, k, alpn), _stamp(c, k))
                        for domain, (c, k) in self.files.items()}
        self._broken: dict[str, tuple] = {}     # domain → stamp that failed to load
        self._first = next(iter(self.files))
        #: the context listeners and STARTTLS start every handshake with
        self.context = self._loaded[self._first][0]
        self.context.sni_callback = self._pick

    def _pick(self, ssl_obj, server_name, _ctx):
        domain = (server_name or "").lower().rstrip(".")
        if domain not in self.files:
            domain = self._first
        try:
            chosen = self.current(domain)
        except Exception:                       # never fail a handshake over a reload
            log.exception("TLS: reloading the certificate of %s", domain)
            chosen = self._loaded[domain][0]
        if chosen is not ssl_obj.context:
            ssl_obj.context = chosen
        return None

    def current(self, domain: str) -> ssl.SSLContext:
        """*domain*'s context, loaded anew first if its files changed."""
        context, stamp = self._loaded[domain]
        cert, key = self.files[domain]
        try:
            now = _stamp(cert, key)
        except OSError:                         # being replaced: keep what works
            return context
        if now == stamp or now == self._broken.get(domain):
            return context
        try:
            fresh = server_context(cert, key, self._alpn)
        except (OSError, ssl.SSLError, ValueError) as exc:
            self._broken[domain] = now
            log.warning("TLS: %s changed but does not load (%s); keeping the certificate "
                        "loaded before", cert, exc)
            return context
        self._loaded[domain] = (fresh, now)
        self._broken.pop(domain, None)
        log.info("TLS: certificate for %s reloaded from %s", domain, cert)
        return fresh

    def reload(self, certs: dict[str, tuple[Path, Path]] | None = None) -> list[str]:
        """Load every domain's files again (SIGHUP), with new paths from *certs*
        for the domains already served (new domains need a restart). Returns
        what failed; a domain that fails keeps its certificate."""
        problems = []
        for domain in self.files:
            cert, key = (certs or {}).get(domain, self.files[domain])
            cert, key = Path(cert), Path(key)
            try:
                self._loaded[domain] = (server_context(cert, key, self._alpn),
                                        _stamp(cert, key))
            except (OSError, ssl.SSLError, ValueError) as exc:
                problems.append(f"{domain}: {cert}: {exc}")
                continue
            self.files[domain] = (cert, key)
            self._broken.pop(domain, None)
        return problems
