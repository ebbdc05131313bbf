"""TLS: per-domain certificates, SNI, and self-signed certificates for development.

Production deployments point ``hosts.<domain>.cert``/``key`` at real
certificates. Without them, a self-signed certificate is made with
``cryptography`` on first start (or with ``xferd cert DOMAIN``) under
``<data_dir>/certs``; clients must be told to trust it (the tests do).
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

log = logging.getLogger("xferd.tls")


def generate_self_signed(domain: str, cert_path: Path, key_path: Path,
                         *, days: int = 3650) -> None:
    """Write a self-signed certificate for *domain* (and ``*.domain``).

    The key (EC P-256) is written with mode 0600 before any byte of it is.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "xferd self-signed")])
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


def ensure_certificate(domain: str, cert: str, key: str, certs_dir: Path) -> tuple[Path, Path]:
    """The configured certificate, or a self-signed one (made on first use)."""
    if cert or key:
        if not (cert and key):
            raise ValueError(f"hosts.{domain}: set both cert and key, or neither")
        return Path(cert), Path(key)
    cert_path, key_path = default_cert_paths(certs_dir, domain)
    if not (cert_path.exists() and key_path.exists()):
        log.warning("no certificate configured for %s: generating a self-signed one in %s",
                    domain, cert_path)
        generate_self_signed(domain, cert_path, key_path)
    return cert_path, key_path


def server_context(cert: Path, key: Path, alpn: list[str] | None = None) -> ssl.SSLContext:
    """A server-side context: TLS 1.2+, our certificate, no client certificates."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


class ServerTLS:
    """One SSL context per served domain, chosen by SNI (RFC 6066).

    A client that sends no SNI, or an unknown name, gets the first domain's
    certificate.
    """

    def __init__(self, certs: dict[str, tuple[Path, Path]], alpn: list[str] | None = None):
        if not certs:
            raise ValueError("no certificates")
        self.contexts = {domain: server_context(c, k, alpn) for domain, (c, k) in certs.items()}
        self.default = next(iter(self.contexts.values()))
        self.default.sni_callback = self._pick

    def _pick(self, ssl_obj, server_name, _ctx):
        chosen = self.contexts.get((server_name or "").lower().rstrip("."))
        if chosen is not None and chosen is not self.default:
            ssl_obj.context = chosen
        return None

    @property
    def context(self) -> ssl.SSLContext:
        return self.default
