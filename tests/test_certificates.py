"""Per-session CA: what it issues, what it refuses, and that Dask's TLS scheduler admits only its workers."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import signal
import ssl
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from marketkit import wait_until

from golem_jupyter.errors import GolemError
from golem_jupyter.market import (
    CertificateError,
    SessionCA,
    certificate_common_name,
    make_key_and_csr,
    verify_issued_by,
)

PROVIDER = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


@pytest.fixture(scope="module")
def ca() -> SessionCA:
    return SessionCA.create("test session", days=2)


def load(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def csr_for(key, common_names: list[str]) -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn) for cn in common_names])
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, algorithm)
    return csr.public_bytes(serialization.Encoding.PEM).decode()


# ---------------------------------------------------------------------------- what is issued


def test_the_ca_certificate_is_a_ca_that_can_only_sign_leaves(ca):
    cert = load(ca.certificate_pem)
    assert cert.subject == cert.issuer
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "test session"
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert 1.9 < (cert.not_valid_after_utc - cert.not_valid_before_utc).days <= 2


def test_issue_signs_the_providers_key_under_its_address(ca):
    key_pem, csr_pem = make_key_and_csr(PROVIDER)
    cert_pem = ca.issue(csr_pem, common_name=PROVIDER, days=30)
    cert = load(cert_pem)
    key = serialization.load_pem_private_key(key_pem.encode(), None)
    assert cert.public_key() == key.public_key()
    assert certificate_common_name(cert_pem) == PROVIDER
    assert cert.issuer == load(ca.certificate_pem).subject
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH}
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost", PROVIDER]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    # Nothing outlives the CA, whatever was asked for.
    assert cert.not_valid_after_utc <= load(ca.certificate_pem).not_valid_after_utc
    assert verify_issued_by(cert_pem, ca.certificate_pem)


def test_issue_own_adds_requested_hosts(ca):
    cert_pem, key_pem = ca.issue_own("scheduler", hosts=("10.0.0.5", "gpu.example.org"))
    names = load(cert_pem).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost", "scheduler", "gpu.example.org"]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address(a) for a in ("127.0.0.1", "10.0.0.5")]
    assert load(cert_pem).public_key() == serialization.load_pem_private_key(key_pem.encode(), None).public_key()
    with pytest.raises(CertificateError, match="neither"):
        ca.issue_own("scheduler", hosts=("not a host!",))


def test_a_certificate_from_another_ca_is_not_issued_by_this_one(ca):
    other = SessionCA.create()
    cert_pem, _ = other.issue_own(PROVIDER)
    assert not verify_issued_by(cert_pem, ca.certificate_pem)
    assert verify_issued_by(cert_pem, other.certificate_pem)
    leaf, _ = ca.issue_own("leaf")
    assert not verify_issued_by(cert_pem, leaf)  # a leaf is no CA
    assert not verify_issued_by("garbage", ca.certificate_pem)


def test_rsa_requests_are_accepted_from_2048_bits(ca):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = load(ca.issue(csr_for(key, [PROVIDER]), common_name=PROVIDER))
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_encipherment


# ---------------------------------------------------------------------------- what is refused


def _tampered_csr() -> str:
    _, csr_pem = make_key_and_csr(PROVIDER)
    der = bytearray(x509.load_pem_x509_csr(csr_pem.encode()).public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01  # inside the signature
    return x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM).decode()


@pytest.mark.parametrize(
    ("make_csr", "fragment"),
    [
        (lambda: "not a csr", "not a PEM certificate signing request"),
        (lambda: make_key_and_csr(PROVIDER)[0], "not a PEM certificate signing request"),
        (_tampered_csr, "signature does not verify"),
        (lambda: make_key_and_csr("0x" + "1" * 40)[1], "can only be issued for"),
        (lambda: csr_for(ec.generate_private_key(ec.SECP256R1()), [PROVIDER, PROVIDER]), "exactly one common name"),
        (lambda: csr_for(ec.generate_private_key(ec.SECP256R1()), []), "exactly one common name"),
        (lambda: csr_for(rsa.generate_private_key(public_exponent=65537, key_size=1024), [PROVIDER]), "2048"),
        (lambda: csr_for(ec.generate_private_key(ec.SECP256K1()), [PROVIDER]), "P-256"),
        (lambda: csr_for(ed25519.Ed25519PrivateKey.generate(), [PROVIDER]), "not accepted"),
    ],
    ids=["garbage", "a key", "bad signature", "other name", "two names", "no name", "small rsa", "k1", "ed25519"],
)
def test_issue_refuses_bad_requests(ca, make_csr, fragment):
    with pytest.raises(CertificateError, match=fragment) as info:
        ca.issue(make_csr(), common_name=PROVIDER)
    assert isinstance(info.value, GolemError)


def test_bad_names_and_durations_are_refused(ca):
    with pytest.raises(CertificateError):
        SessionCA.create(days=0)
    with pytest.raises(CertificateError):
        ca.issue_own("x" * 65)
    with pytest.raises(CertificateError):
        ca.issue_own("ok", days=0)
    with pytest.raises(CertificateError):
        certificate_common_name("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")


# ---------------------------------------------------------------------------- files and Dask


def test_write_credentials_writes_the_key_for_its_owner_only(ca, tmp_path):
    creds = ca.write_credentials(tmp_path / "tls", "client of ../x")
    assert creds.ca_file == tmp_path / "tls" / "ca.pem"
    assert creds.cert_file.name == "client_of_.._x.pem" and creds.key_file.name == "client_of_.._x.key"
    assert creds.cert_file.parent == creds.key_file.parent == tmp_path / "tls"
    assert stat.S_IMODE(os.stat(creds.key_file).st_mode) == 0o600
    assert creds.ca_file.read_text() == ca.certificate_pem
    assert verify_issued_by(creds.cert_file.read_text(), ca.certificate_pem)
    # Rewriting over a file that others could read leaves it private.
    os.chmod(creds.key_file, 0o644)
    ca.write_credentials(tmp_path / "tls", "client of ../x")
    assert stat.S_IMODE(os.stat(creds.key_file).st_mode) == 0o600
    assert ca.write_credentials(tmp_path / "tls", "ca").cert_file.name == "_ca.pem"  # never over the CA file


def _security(ca_file: Path, scheduler, client, worker):
    from distributed.security import Security

    return Security(
        tls_ca_file=str(ca_file),
        tls_scheduler_cert=str(scheduler.cert_file),
        tls_scheduler_key=str(scheduler.key_file),
        tls_client_cert=str(client.cert_file),
        tls_client_key=str(client.key_file),
        tls_worker_cert=str(worker.cert_file),
        tls_worker_key=str(worker.key_file),
        require_encryption=True,
    )


def test_dask_security_loads_the_credentials(ca, tmp_path):
    scheduler, client = ca.write_credentials(tmp_path, "scheduler"), ca.write_credentials(tmp_path, "client")
    key_pem, csr_pem = make_key_and_csr(PROVIDER)
    (tmp_path / "worker.pem").write_text(ca.issue(csr_pem, common_name=PROVIDER))
    (tmp_path / "worker.key").write_text(key_pem)
    worker = type(scheduler)(scheduler.ca_file, tmp_path / "worker.pem", tmp_path / "worker.key")
    security = _security(scheduler.ca_file, scheduler, client, worker)
    for role in ("client", "scheduler", "worker"):
        context = security.get_connection_args(role)["ssl_context"]
        assert isinstance(context, ssl.SSLContext) and context.verify_mode == ssl.CERT_REQUIRED
    for role in ("scheduler", "worker"):
        assert security.get_listen_args(role)["ssl_context"].verify_mode == ssl.CERT_REQUIRED


def _start(args: list[str], log: Path) -> subprocess.Popen:
    # A session of its own, so the whole process group can be ended in `finally`.
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "dask", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _tls_args(creds) -> list[str]:
    return ["--tls-ca-file", str(creds.ca_file), "--tls-cert", str(creds.cert_file), "--tls-key", str(creds.key_file)]


@pytest.mark.slow
def test_only_workers_with_a_certificate_from_the_session_ca_join_the_scheduler(tmp_path):
    from distributed import Client
    from distributed.security import Security

    session, intruder_ca = SessionCA.create(), SessionCA.create("another session")
    scheduler_creds = session.write_credentials(tmp_path / "scheduler", "scheduler")
    client_creds = session.write_credentials(tmp_path / "client", "client")
    # The provider's own key; only its CSR reaches the session CA.
    key_pem, csr_pem = make_key_and_csr(PROVIDER)
    good = tmp_path / "good"
    good.mkdir()
    (good / "w.pem").write_text(session.issue(csr_pem, common_name=PROVIDER))
    (good / "w.key").write_text(key_pem)
    good_creds = type(client_creds)(client_creds.ca_file, good / "w.pem", good / "w.key")
    # The intruder trusts the session CA (its certificate is no secret) but holds another CA's certificate.
    forged = intruder_ca.write_credentials(tmp_path / "intruder", PROVIDER)
    intruder_creds = type(forged)(client_creds.ca_file, forged.cert_file, forged.key_file)

    scheduler_file = tmp_path / "scheduler.json"
    processes: list[subprocess.Popen] = []
    try:
        scheduler = ["scheduler", "--host", "127.0.0.1", "--port", "0", "--protocol", "tls", "--no-dashboard"]
        scheduler += ["--scheduler-file", str(scheduler_file), *_tls_args(scheduler_creds)]
        processes.append(_start(scheduler, tmp_path / "scheduler.log"))
        deadline = time.monotonic() + 15
        while not scheduler_file.exists() or not scheduler_file.read_text().strip():
            assert time.monotonic() < deadline, (tmp_path / "scheduler.log").read_text()
            assert processes[0].poll() is None, (tmp_path / "scheduler.log").read_text()
            time.sleep(0.05)
        address = json.loads(scheduler_file.read_text())["address"]
        assert address.startswith("tls://127.0.0.1:")

        worker = ["worker", address, "--host", "127.0.0.1", "--no-nanny", "--nthreads", "1", "--no-dashboard"]
        processes.append(_start([*worker, "--name", "good", *_tls_args(good_creds)], tmp_path / "good.log"))
        # The intruder gives up (exit code 1) when it cannot register within 5 s.
        intruder = _start(
            [*worker, "--name", "intruder", "--death-timeout", "5s", *_tls_args(intruder_creds)], tmp_path / "bad.log"
        )
        processes.append(intruder)

        security = Security(
            tls_ca_file=str(client_creds.ca_file),
            tls_client_cert=str(client_creds.cert_file),
            tls_client_key=str(client_creds.key_file),
            require_encryption=True,
        )
        with Client(address, security=security, timeout=15) as client:
            client.wait_for_workers(1, timeout=15)

            def intruder_gave_up() -> bool:
                names = [w["name"] for w in client.scheduler_info()["workers"].values()]
                assert names == ["good"], (tmp_path / "bad.log").read_text()[-2000:]
                return intruder.poll() is not None

            wait_until(intruder_gave_up, 60, "the intruder gives up and exits", interval=0.1)
            # The intruder did try, again and again, and the scheduler's TLS layer refused its certificate.
            bad_log = (tmp_path / "bad.log").read_text()
            assert intruder.returncode != 0 and "Timed out starting worker" in bad_log, bad_log[-2000:]
            assert len(re.findall(rf"Waiting to connect to: +{re.escape(address)}\n", bad_log)) >= 3, bad_log[-2000:]
            assert "CERTIFICATE_VERIFY_FAILED" in (tmp_path / "scheduler.log").read_text()
            # A client with the intruder's certificate cannot even connect.
            intruder_security = Security(
                tls_ca_file=str(intruder_creds.ca_file),
                tls_client_cert=str(intruder_creds.cert_file),
                tls_client_key=str(intruder_creds.key_file),
                require_encryption=True,
            )
            with pytest.raises((OSError, TimeoutError)):
                Client(address, security=intruder_security, timeout=2)
            workers = client.scheduler_info()["workers"].values()
            assert [w["name"] for w in workers] == ["good"], (tmp_path / "bad.log").read_text()[-2000:]
            assert client.submit(sum, [1, 2, 3]).result(timeout=10) == 6
    finally:
        for process in reversed(processes):
            _stop(process)
