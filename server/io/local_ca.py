"""A local certificate authority for trying xferd with real clients (what mkcert
does for web developers).

``xferd cert`` (and a first start without certificates) makes the CA once in
``<data_dir>/ca`` — or ``[server] ca_dir`` — as ``xferd-local-ca.crt`` and
``xferd-local-ca.key`` (mode 0600 from the first byte, in a 0700 directory),
and signs each served domain's certificate with it. A user trusts the CA once
(:func:`trust_instructions`) instead of one self-signed certificate per domain,
which some clients (Dino) cannot be told to accept at all.

Trusting it cannot hurt anything else, because the CA is restricted:

- name constraints (RFC 5280 §4.2.1.10, marked critical as that section
  requires): the only permitted dNSName subtrees are ``localhost`` and the
  served domains outside it. RFC 6761 §6.3 reserves ``localhost`` and every
  name below it for the local machine — no registrar may hand them out and
  name resolution answers them with loopback — so a CA limited to them can
  vouch for nothing on the Internet, and every ``*.localhost`` domain added
  later is covered without making a new CA. A domain outside the constraints
  (say ``xmpp.lan``) needs a new CA (:func:`create` with the configured
  domains), which every device must then trust again;
- every IPv4 and IPv6 address is an excluded subtree, so it cannot vouch for
  an address either (a permitted dNSName subtree leaves other name forms free);
- path length 0 (no intermediate CAs) and extended key usage TLS server and
  client only (no code signing, no e-mail).
"""

from __future__ import annotations

import datetime
import getpass
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT = "xferd-local-ca.crt"
CA_KEY = "xferd-local-ca.key"
#: RFC 6761 §6.3: localhost and the names below it are the local machine's
RESERVED = "localhost"
CA_DAYS = 3650
#: validity of a domain certificate: 825 days, the longest Apple platforms
#: accept from a CA a user added (mkcert uses it too)
LEAF_DAYS = 825
ORGANIZATION = "xferd local CA"


class CAError(Exception):
    """The CA cannot do what was asked (a name outside its constraints, unreadable files)."""


def within(domain: str, subtree: str) -> bool:
    """RFC 5280 §4.2.1.10: a DNS name satisfies a dNSName constraint when it is
    the constraint with zero or more labels added on the left."""
    domain, subtree = domain.lower().rstrip("."), subtree.lower().rstrip(".")
    return domain == subtree or domain.endswith("." + subtree)


def subtrees_for(domains) -> list[str]:
    """``localhost`` and every domain of *domains* that no other subtree covers."""
    chosen = [RESERVED]
    for domain in sorted({d.lower().rstrip(".") for d in domains}, key=lambda d: d.count(".")):
        if not any(within(domain, s) for s in chosen):
            chosen.append(domain)
    return chosen


def permitted(certificate: x509.Certificate) -> list[str]:
    """The permitted dNSName subtrees of a CA certificate's name constraints."""
    try:
        ext = certificate.extensions.get_extension_for_class(x509.NameConstraints)
    except x509.ExtensionNotFound:
        return []
    return [n.value for n in ext.value.permitted_subtrees or () if isinstance(n, x509.DNSName)]


def ca_paths(directory: Path) -> tuple[Path, Path]:
    return Path(directory) / CA_CERT, Path(directory) / CA_KEY


def _write(path: Path, data: bytes, mode: int) -> None:
    """Replace *path* whole: a temporary file created with *mode* (so a key is
    never readable by others, not even for a moment), then renamed over it —
    a server reading the file meanwhile sees the old one or the new one."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def write_private_key(path: Path, key) -> None:
    _write(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()), 0o600)


def write_certificates(path: Path, *certs: x509.Certificate) -> None:
    _write(path, b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs), 0o644)


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


@dataclass
class LocalCA:
    cert_path: Path
    key_path: Path
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def permitted(self) -> list[str]:
        """The dNSName subtrees the CA may sign for."""
        return permitted(self.certificate)

    def covers(self, domain: str) -> bool:
        return any(within(domain, s) for s in self.permitted)

    @property
    def name(self) -> str:
        return self.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value

    @property
    def fingerprint(self) -> str:
        return self.certificate.fingerprint(hashes.SHA256()).hex(":").upper()

    def signed(self, certificate: x509.Certificate) -> bool:
        """Whether this CA issued *certificate* (its signature checks out)."""
        try:
            certificate.verify_directly_issued_by(self.certificate)
            return True
        except (ValueError, TypeError, InvalidSignature):
            return False

    def issue(self, domain: str, cert_path: Path, key_path: Path, *,
              days: int = LEAF_DAYS) -> None:
        """A certificate for *domain* alone (SAN dNSName, RFC 6125 §6.4 / RFC 6120
        §13.7.1.2: what a client checks), signed by the CA. The certificate file
        holds the CA's certificate after the domain's, so that it can be given
        as the trust file (``--cafile``) just like a self-signed one."""
        if not self.covers(domain):
            raise CAError(f"the local CA {self.cert_path} may sign for "
                          f"{', '.join(self.permitted)} and the names below them only, "
                          f"not {domain}")
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain),
                                         x509.NameAttribute(NameOID.ORGANIZATION_NAME,
                                                            ORGANIZATION)]))
                .issuer_name(self.certificate.subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(min(now + datetime.timedelta(days=days),
                                     self.certificate.not_valid_after_utc))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]),
                               critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(
                    digital_signature=True, key_encipherment=False, content_commitment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=False,
                    crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]),
                               critical=False)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                               critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    self.key.public_key()), critical=False)
                .sign(self.key, hashes.SHA256()))
        cert_path.parent.mkdir(parents=True, exist_ok=True)
        write_private_key(key_path, key)
        write_certificates(cert_path, cert, self.certificate)


def load(directory: Path) -> LocalCA | None:
    """The CA in *directory*, or None if there is none."""
    cert_path, key_path = ca_paths(directory)
    if not (cert_path.exists() and key_path.exists()):
        return None
    try:
        certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise CAError(f"cannot read the local CA in {directory}: {exc}") from None
    return LocalCA(cert_path, key_path, certificate, key)


def load_certificate(directory: Path) -> x509.Certificate | None:
    """Only the CA's certificate (what a client needs; the key may be unreadable)."""
    try:
        return x509.load_pem_x509_certificate(ca_paths(directory)[0].read_bytes())
    except (OSError, ValueError):
        return None


def create(directory: Path, domains) -> LocalCA:
    """A new CA in *directory* (replacing one there) for ``localhost`` and *domains*."""
    directory = Path(directory)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    cert_path, key_path = ca_paths(directory)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, _who()),
        # the date tells two CAs of one machine apart in a trust store's list
        x509.NameAttribute(NameOID.COMMON_NAME,
                           f"xferd local CA {_who()} {now:%Y-%m-%d %H:%M:%S}")])
    constraints = x509.NameConstraints(
        permitted_subtrees=[x509.DNSName(s) for s in subtrees_for(domains)],
        excluded_subtrees=[x509.IPAddress(ipaddress.ip_network("0.0.0.0/0")),
                           x509.IPAddress(ipaddress.ip_network("::/0"))])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_encipherment=False, content_commitment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(constraints, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                              ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256()))
    write_private_key(key_path, key)          # the key first: no certificate without it
    write_certificates(cert_path, certificate)
    return LocalCA(cert_path, key_path, certificate, key)


def trust_for(directory: Path | None, domain: str) -> Path | None:
    """The local CA's certificate if the CA in *directory* was made for *domain*
    (its name constraints cover it), else None: what ``xferd migrate`` and
    ``xferd transfer`` add to what they trust when they reach a local server."""
    if directory is None:
        return None
    certificate = load_certificate(directory)
    if certificate is None or not any(within(domain, s) for s in permitted(certificate)):
        return None
    return ca_paths(directory)[0]


def trust_instructions(cert_path: Path) -> str:
    """How to make clients trust the CA: Debian/Ubuntu, NSS, Android."""
    path = Path(cert_path).resolve()
    try:
        names = ", ".join(permitted(x509.load_pem_x509_certificate(path.read_bytes())))
    except (OSError, ValueError):
        names = RESERVED
    return f"""\
To trust it (once per device; it can vouch for {names} and the names below them only):
  Debian/Ubuntu system store (Dino, Gajim, profanity, poezio, xferd migrate):
    sudo cp {path} /usr/local/share/ca-certificates/xferd-local-ca.crt
    sudo update-ca-certificates
  Firefox/Chromium and other NSS programs (package libnss3-tools):
    certutil -d sql:$HOME/.pki/nssdb -A -t C,, -n "xferd local CA" -i {path}
    (Firefox: the same with -d sql:<your profile directory>)
  Android (Conversations uses the user certificates): copy the file to the phone,
    Settings → Security → Encryption & credentials → Install a certificate → CA certificate
To stop trusting it: remove that file and run sudo update-ca-certificates --fresh;
certutil -d sql:$HOME/.pki/nssdb -D -n "xferd local CA"; on Android, Trusted credentials → User."""
