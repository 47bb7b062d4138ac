"""A real IMAP server for the tests: Debian's dovecot, started on loopback with a private configuration.

It serves IMAPS only (TLS from the first byte, certificate from a throwaway CA), can require a client
certificate from that CA, and keeps Maildirs in a temporary folder. `.ci/run` installs dovecot-imapd; outside CI
the tests that need it are skipped when the binary is missing. Running as root, dovecot refuses to give mail
processes uid 0, so the Maildirs belong to Debian's ``mail`` user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"


def dovecot_available() -> bool:
    return Path(DOVECOT).exists()


def require_dovecot() -> None:
    if not dovecot_available():
        if os.environ.get("CI"):
            pytest.fail("dovecot is required in CI (.ci/run installs dovecot-imapd)")
        pytest.skip("dovecot is not installed (apt-get install dovecot-imapd)")


def make_pki(directory: Path, *, stranger: bool = False) -> Path:
    """A throwaway CA (trustme) in ``directory``: ``ca.pem``, ``server.pem`` (127.0.0.1, chain + key) and the
    gateway's ``client.pem`` / ``client.key``; with ``stranger``, a client certificate from another CA too."""
    import trustme

    ca = trustme.CA()
    ca.cert_pem.write_to_path(directory / "ca.pem")
    ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(
        directory / "server.pem"
    )
    client = ca.issue_cert("gateway.hopital.example")
    client.cert_chain_pems[0].write_to_path(directory / "client.pem")
    client.private_key_pem.write_to_path(directory / "client.key")
    if stranger:
        other = trustme.CA().issue_cert("intruder.example")
        other.cert_chain_pems[0].write_to_path(directory / "stranger.pem")
        other.private_key_pem.write_to_path(directory / "stranger.key")
    return directory


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Dovecot:
    server_pem: Path  # certificate chain + key of the server (127.0.0.1)
    ca_pem: Path  # the CA that client certificates must chain to
    require_client_cert: bool = True
    users: dict[str, str] = field(default_factory=lambda: {"bal": "bal-secret"})
    port: int = 0
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="dv-")))
    _proc: subprocess.Popen | None = None

    def _owner(self) -> tuple[str, int, int]:
        entry = pwd.getpwuid(os.getuid()) if os.getuid() != 0 else pwd.getpwnam("mail")
        return entry.pw_name, entry.pw_uid, entry.pw_gid

    def _config(self) -> str:
        user, uid, _gid = self._owner()
        me = pwd.getpwuid(os.getuid()).pw_name
        internal = "" if os.getuid() == 0 else f"default_internal_user = {me}\ndefault_login_user = {me}\n"
        verify = (
            f"ssl_ca = <{self.ca_pem}\nssl_verify_client_cert = yes\nssl_require_crl = no\nauth_ssl_require_client_cert = yes\n"
            if self.require_client_cert
            else ""
        )
        return f"""protocols = imap
listen = 127.0.0.1
base_dir = {self.root}/run
state_dir = {self.root}/run/state
instance_name = cisis-test-{self.port}
log_path = {self.root}/dovecot.log
{internal}ssl = required
ssl_cert = <{self.server_pem}
ssl_key = <{self.server_pem}
ssl_min_protocol = TLSv1.2
{verify}disable_plaintext_auth = yes
auth_mechanisms = plain login
first_valid_uid = {uid}
mail_location = maildir:{self.root}/mail/%u
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.root}/passwd
}}
userdb {{
  driver = static
  args = uid={user} gid={user} home={self.root}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = {self.port}
    ssl = yes
  }}
  chroot =
}}
service anvil {{
  chroot =
}}
"""

    def start(self, timeout_s: float = 15.0) -> None:
        require_dovecot()
        self.port = self.port or _free_port()
        _user, uid, gid = self._owner()
        self.root.chmod(0o755)  # dovecot's auth process (another user) reads the passwd file below
        (self.root / "run" / "state").mkdir(parents=True, exist_ok=True)
        (self.root / "mail").mkdir(exist_ok=True)
        os.chown(self.root / "mail", uid, gid)
        (self.root / "passwd").write_text(
            "".join(f"{name}:{{PLAIN}}{password}::::::\n" for name, password in self.users.items())
        )
        (self.root / "dovecot.conf").write_text(self._config())
        self._proc = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(self.root / "dovecot.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise RuntimeError(f"dovecot exited: {err[-500:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"dovecot did not listen on {self.port} within {timeout_s}s: {self.log()[-500:]}")

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait(5)
        self._proc = None
        shutil.rmtree(self.root, ignore_errors=True)

    def client_context(self, cert: Path | None, key: Path | None) -> ssl.SSLContext:
        """A client context trusting the test CA, with a client certificate when given."""
        ctx = ssl.create_default_context(cafile=str(self.ca_pem))
        if cert is not None:
            ctx.load_cert_chain(str(cert), str(key) if key else None)
        return ctx
