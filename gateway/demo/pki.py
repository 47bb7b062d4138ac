"""A throwaway PKI for the demo: a CA, the DMP sandbox's server certificate (127.0.0.1) and the structure's
certificate (TLS client and seal for the VIHF and the submission-set signature), RSA as in the IGC-Santé.

Written once under the demo folder and reused; never for production (the keys are unencrypted on disk).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True, slots=True)
class DemoPki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(cn: str, ou: str | None = None) -> x509.Name:
    parts = [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "CISIS DEMO"),
    ]
    if ou:
        parts.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
    parts.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(parts)


def _write(path: Path, cert: x509.Certificate, key: rsa.RSAPrivateKey | None = None) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        path.with_suffix(".key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )


def _issue(
    subject: x509.Name,
    key: rsa.RSAPrivateKey,
    issuer: x509.Name,
    issuer_key: rsa.RSAPrivateKey,
    *,
    ca: bool = False,
    san: list[x509.GeneralName] | None = None,
    usages: list[x509.ObjectIdentifier] | None = None,
) -> x509.Certificate:
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
        # Strict X.509 path validation (signxml, OpenSSL) wants the usages spelled out.
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca,
                content_commitment=False,
                key_encipherment=not ca,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def demo_pki(folder: Path) -> DemoPki:
    """The demo PKI in ``folder``, created on first use."""
    folder.mkdir(parents=True, exist_ok=True)
    pki = DemoPki(
        ca=folder / "ca.pem",
        server_cert=folder / "dmp-sandbox.pem",
        server_key=folder / "dmp-sandbox.key",
        client_cert=folder / "structure.pem",
        client_key=folder / "structure.key",
    )
    if all(p.exists() for p in (pki.ca, pki.server_cert, pki.server_key, pki.client_cert, pki.client_key)):
        return pki
    ca_key, server_key, client_key = _key(), _key(), _key()
    ca_name = _name("CISIS DEMO CA")
    ca = _issue(ca_name, ca_key, ca_name, ca_key, ca=True)
    server = _issue(
        _name("127.0.0.1"),
        server_key,
        ca_name,
        ca_key,
        san=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
        usages=[ExtendedKeyUsageOID.SERVER_AUTH],
    )
    client = _issue(
        _name("CISIS GATEWAY DEMO", ou="1120459876"),
        client_key,
        ca_name,
        ca_key,
        usages=[ExtendedKeyUsageOID.CLIENT_AUTH],
    )
    _write(pki.ca, ca)
    _write(pki.server_cert, server, server_key)
    _write(pki.client_cert, client, client_key)
    return pki
