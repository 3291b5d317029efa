"""The broker's small PKI: one CA that devices pin, and the broker's server certificate.

Keys are ECDSA P-256 (secp256r1) with ECDSA-SHA256 signatures: the curve every
TLS stack on the path takes - Mosquitto/OpenSSL, and mbedTLS under MicroPython's
``ssl``/``tls`` on the ESP32 and the Pico W (mbedTLS has no Ed25519
certificates, so Ed25519 is not an option for the nodes).  Devices pin the CA
(its PEM goes onto the node as ``/ca.pem`` and ``mqtt.ca`` points at it), so a
server certificate can be renewed without touching a node; renewing the CA
means re-provisioning every node, hence its long life.

Files in the PKI directory (private keys 0600, created exclusively)::

    ca.key  ca.crt  server.key  server.crt
"""

from __future__ import annotations

import grp
import ipaddress
import os
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_KEY, CA_CERT = "ca.key", "ca.crt"
SERVER_KEY, SERVER_CERT = "server.key", "server.crt"
CA_DAYS = 20 * 365           # the nodes pin it: replacing it means visiting every node
SERVER_DAYS = 397            # renew yearly; nodes need no change


class PKIError(RuntimeError):
    pass


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey, force: bool, group: str | None = None) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise PKIError(f"{path} exists (use --force to replace it)") from None
    with os.fdopen(fd, "wb") as f:
        if group:
            os.fchown(f.fileno(), -1, grp.getgrnam(group).gr_gid)
        os.fchmod(f.fileno(), 0o640 if group else 0o600)
        f.write(pem)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.chmod(path, 0o644)


def _name(cn: str, org: str | None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def init_ca(directory: Path, *, common_name: str = "StreetSense broker CA", organization: str | None = None,
            days: int = CA_DAYS, force: bool = False) -> Path:
    """Create the CA key and self-signed certificate; returns the certificate path."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    if (d / CA_CERT).exists() and not force:
        raise PKIError(f"{d / CA_CERT} exists: devices pin it, so replacing it means re-provisioning them "
                       "(use --force if that is really intended)")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(timezone.utc)
    name = _name(common_name, organization)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256()))
    _write_key(d / CA_KEY, key, force)
    _write_cert(d / CA_CERT, cert)
    return d / CA_CERT


def _load_ca(d: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    if not (d / CA_KEY).exists() or not (d / CA_CERT).exists():
        raise PKIError(f"no CA in {d} (run `streetsense pki init` first)")
    key = serialization.load_pem_private_key((d / CA_KEY).read_bytes(), password=None)
    cert = x509.load_pem_x509_certificate((d / CA_CERT).read_bytes())
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PKIError("the CA key is not an EC key")
    return key, cert


def _san(hosts: list[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for h in hosts:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            out.append(x509.DNSName(h))
    return out


def server_cert(directory: Path, hosts: list[str], *, days: int = SERVER_DAYS, force: bool = True,
                group: str | None = None) -> Path:
    """A server key and certificate for the broker, signed by the CA, with ``hosts`` as SANs
    (DNS names and IP addresses; the first is also the CN).  ``group`` (e.g. ``mosquitto``)
    makes the key 0640 for the broker's group; the CA key stays 0600 whatever happens."""
    if not hosts:
        raise PKIError("at least one --host (DNS name or IP address the devices connect to)")
    d = Path(directory)
    ca_key, ca_cert = _load_ca(d)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(timezone.utc)
    not_after = min(now + timedelta(days=days), ca_cert.not_valid_after_utc)
    cert = (x509.CertificateBuilder()
            .subject_name(_name(hosts[0], None))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(_san(hosts)), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    _write_key(d / SERVER_KEY, key, force, group)
    _write_cert(d / SERVER_CERT, cert)
    return d / SERVER_CERT


@dataclass(frozen=True)
class CertInfo:
    path: str
    subject: str
    issuer: str
    not_before: str
    not_after: str
    days_left: int
    key: str
    sans: list[str]
    sha256: str
    is_ca: bool

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def describe(path: Path) -> CertInfo:
    cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
    try:
        sans = [str(n.value) for n in cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value]
    except x509.ExtensionNotFound:
        sans = []
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    pk = cert.public_key()
    key = f"EC {pk.curve.name}" if isinstance(pk, ec.EllipticCurvePublicKey) else type(pk).__name__
    now = datetime.now(timezone.utc)
    return CertInfo(str(path), cert.subject.rfc4514_string(), cert.issuer.rfc4514_string(),
                    cert.not_valid_before_utc.isoformat(), cert.not_valid_after_utc.isoformat(),
                    (cert.not_valid_after_utc - now).days, key, sans,
                    cert.fingerprint(hashes.SHA256()).hex(":"), is_ca)


def show(directory: Path) -> list[CertInfo]:
    d = Path(directory)
    out = [describe(d / n) for n in (CA_CERT, SERVER_CERT) if (d / n).exists()]
    if not out:
        raise PKIError(f"no certificates in {d}")
    return out


def ca_pem(directory: Path) -> bytes:
    p = Path(directory) / CA_CERT
    if not p.exists():
        raise PKIError(f"no CA certificate at {p} (run `streetsense pki init`)")
    return p.read_bytes()
