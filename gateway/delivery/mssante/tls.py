"""TLS client context for the MSSanté relay: server verified against the configured CA, client certificate.

MSSanté operators authenticate the sending system by its certificate (mutual TLS), so the context carries the
gateway's certificate and key; the relay's certificate is checked against the operator's CA bundle (the
system's trust store when none is configured), host name included. Errors name the file at fault, never the
passphrase.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

log = logging.getLogger(__name__)


class TlsConfigError(ValueError):
    """The TLS files cannot be used (missing, unreadable, not PEM, key not matching, wrong passphrase)."""


def _readable(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise TlsConfigError(f"{what} not found: {path}") from None
    except OSError as exc:
        raise TlsConfigError(
            f"{what} cannot be read: {path} ({exc.strerror or type(exc).__name__})"
        ) from None


def client_tls_context(
    *,
    ca_file: Path | None = None,
    cert_file: Path | None = None,
    key_file: Path | None = None,
    key_password: str | None = None,
    verify: bool = True,
    minimum_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2,
) -> ssl.SSLContext:
    """A client context for the SMTP relay.

    ``ca_file``: PEM bundle the relay's certificate must chain to (None: the system's trust store).
    ``cert_file``/``key_file``: the gateway's client certificate and its key (PEM; the key may be in
    ``cert_file`` itself, then ``key_file`` is None), ``key_password`` when the key is encrypted.
    ``verify=False`` disables server verification (tests only; logged as a warning).
    """
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = minimum_version
    if ca_file is not None:
        data = _readable(ca_file, "CA bundle")
        if b"-----BEGIN CERTIFICATE-----" not in data:
            raise TlsConfigError(f"CA bundle holds no PEM certificate: {ca_file}")
        try:
            ctx.load_verify_locations(cafile=str(ca_file))
        except ssl.SSLError as exc:
            raise TlsConfigError(f"CA bundle is not a valid PEM bundle: {ca_file} ({exc.reason})") from None
    if verify:
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        log.warning("TLS server verification disabled: the relay's identity is not checked")
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert_file is None:
        if key_file is not None:
            raise TlsConfigError(f"client key given without a client certificate: {key_file}")
        return ctx
    cert = _readable(cert_file, "client certificate")
    if b"-----BEGIN CERTIFICATE-----" not in cert:
        raise TlsConfigError(f"client certificate holds no PEM certificate: {cert_file}")
    key_path = key_file if key_file is not None else cert_file
    key = _readable(key_path, "client key")
    if b"PRIVATE KEY-----" not in key:
        raise TlsConfigError(f"client key holds no PEM private key: {key_path}")
    encrypted = b"ENCRYPTED" in key
    if encrypted and not key_password:
        raise TlsConfigError(f"client key is encrypted and no passphrase is configured: {key_path}")

    # A callable, never None: with None OpenSSL would prompt on the terminal for an encrypted key.
    def password() -> bytes:
        return (key_password or "").encode()

    try:
        ctx.load_cert_chain(
            str(cert_file), str(key_file) if key_file is not None else None, password=password
        )
    except ssl.SSLError as exc:
        reason = exc.reason or type(exc).__name__
        if encrypted:
            hint = "wrong passphrase or key not matching the certificate"
        else:
            hint = "key not matching the certificate, or not a valid PEM certificate/key"
        raise TlsConfigError(
            f"cannot load client certificate {cert_file} / key {key_path}: {hint} ({reason})"
        ) from None
    return ctx
