"""Fixtures: real opsd processes (the binary named by OPSD_BIN, else the
workspace's target/debug/opsd), tokens files and TLS certificates."""

import datetime
import hashlib
import os
import queue
import secrets
import signal
import subprocess
import threading
from collections import deque
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
START_TIMEOUT = 30.0


def opsd_binary() -> str:
    binary = os.environ.get("OPSD_BIN") or str(REPO / "target" / "debug" / "opsd")
    if not os.access(binary, os.X_OK):
        pytest.fail(
            f"no opsd binary at {binary}: run `cargo build -p opsd --bin opsd` or set OPSD_BIN",
            pytrace=False,
        )
    return binary


class Opsd:
    """One opsd process over a SQLite store in `data_dir`; `restart` brings it
    back on the same address and data, as an operator's restart would."""

    def __init__(self, data_dir: Path, args=()) -> None:
        self.data_dir = data_dir
        self.args = list(args)
        self.address = "127.0.0.1:0"
        self.process = None
        self.log = deque(maxlen=300)

    @property
    def endpoint(self) -> str:
        return self.address

    def start(self) -> "Opsd":
        self.process = subprocess.Popen(
            [opsd_binary(), "--listen", self.address, "--data-dir", str(self.data_dir), *self.args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, "OPSD_LOG": "info"},
            text=True,
        )
        lines: "queue.Queue[str]" = queue.Queue()

        def drain(stream) -> None:
            for line in stream:
                self.log.append(line.rstrip("\n"))
                lines.put(line)
            lines.put("")

        threading.Thread(target=drain, args=(self.process.stderr,), daemon=True).start()
        while True:
            try:
                line = lines.get(timeout=START_TIMEOUT)
            except queue.Empty:
                self.kill()
                pytest.fail(f"opsd did not start listening:\n{self.log_tail()}", pytrace=False)
            if not line:
                pytest.fail(f"opsd exited before listening:\n{self.log_tail()}", pytrace=False)
            if "address=" in line:
                self.address = line.split("address=", 1)[1].split()[0]
                return self

    def log_tail(self) -> str:
        return "\n".join(self.log)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> None:
        self.kill()
        self.start()


@pytest.fixture
def start_opsd(tmp_path_factory):
    """Starts opsd processes with extra flags; all are stopped after the test."""
    started = []

    def start(*args: str) -> Opsd:
        server = Opsd(tmp_path_factory.mktemp("opsd-data"), args).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.terminate()


@pytest.fixture(scope="module")
def opsd_server(tmp_path_factory):
    """One plain server for the tests of a module that need nothing special."""
    server = Opsd(tmp_path_factory.mktemp("opsd-data")).start()
    yield server
    server.terminate()


@pytest.fixture
def client(opsd_server):
    import opsd

    with opsd.Client(opsd_server.endpoint, timeout=10) as client:
        yield client


def make_token() -> str:
    return "opsd_" + secrets.token_urlsafe(32)


def tokens_file(path: Path, principals) -> Path:
    """`principals`: (id, token, roles) admitted in every scope."""
    entries = []
    for principal, token, roles in principals:
        digest = hashlib.sha256(token.encode()).hexdigest()
        role_list = ", ".join(f'"{role}"' for role in roles)
        entries.append(
            f'[[principal]]\nid = "{principal}"\ntoken_sha256 = "{digest}"\n'
            f'scopes = ["*"]\nroles = [{role_list}]\n'
        )
    path.write_text("\n".join(entries))
    return path


def certificates(directory: Path):
    """A CA and a server certificate for 127.0.0.1 and localhost signed by it:
    returns (ca.pem, cert.pem, key.pem)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "opsd test ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem = directory / "ca.pem"
    cert_pem = directory / "cert.pem"
    key_pem = directory / "key.pem"
    ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_pem, cert_pem, key_pem
