"""Per-session certificate authority for the requestor's TLS Dask scheduler (DESIGN.md section 6).

Each session makes its own CA. The scheduler, the requestor's client and every provider's
worker hold a certificate from it, and the scheduler requires one from every peer (mutual
TLS), so only workers the requestor agreed with can join. A provider keeps its private key:
it sends a certificate signing request (:func:`make_key_and_csr`) in its ``accept`` message
and gets the certificate back in ``confirm`` (:meth:`SessionCA.issue`).

Keys are EC P-256: fast to make, and accepted by OpenSSL everywhere Dask runs.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..errors import GolemError

if TYPE_CHECKING:
    from distributed.security import Security

CLOCK_SKEW = datetime.timedelta(minutes=5)
"""Certificates start this long before now, so a peer whose clock is a little behind accepts them."""

MIN_RSA_BITS = 2048
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")
_DNS_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


class CertificateError(GolemError):
    """A certificate or certificate signing request was refused or could not be read."""


@dataclass(frozen=True)
class Credentials:
    """Where one party's TLS files are: the session CA, its certificate and its private key."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")


def _cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


class Role(StrEnum):
    """What a certificate's holder is to the session, written by the CA into the subject's
    organizational unit. The scheduler serves each peer by the role its certificate names
    (:mod:`golem_jupyter.trust`): a worker gets the worker protocol and nothing else."""

    CLIENT = "requestor client"
    """The requestor's own Dask client, in its kernel: every scheduler handler."""
    SCHEDULER = "scheduler"
    """The session's scheduler."""
    WORKER = "worker"
    """A provider's worker: registration, heartbeats, task reports and data transfer only."""


def _name(common_name: str, role: Role | None = None) -> x509.Name:
    if not isinstance(common_name, str) or not 1 <= len(common_name) <= 64:
        # X.509 (RFC 5280) caps a common name at 64 characters.
        raise CertificateError(f"A common name must be 1 to 64 characters, got {common_name!r}.")
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if role is not None:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, Role(role).value))
    return x509.Name(attributes)


def peer_identity(peercert: object) -> tuple[Role | None, str | None]:
    """The role and common name of a TLS peer, from :meth:`ssl.SSLSocket.getpeercert`'s dict.

    ``(None, None)`` for anything else; a role that is not one of :class:`Role` is ``None``.
    """
    if not isinstance(peercert, dict):
        return None, None
    fields: dict[str, list[str]] = {}
    for rdn in peercert.get("subject", ()):
        for attribute in rdn:
            if isinstance(attribute, tuple) and len(attribute) == 2:
                fields.setdefault(str(attribute[0]), []).append(str(attribute[1]))
    names, units = fields.get("commonName", []), fields.get("organizationalUnitName", [])
    name = names[0] if len(names) == 1 else None
    try:
        role = Role(units[0]) if len(units) == 1 else None
    except ValueError:
        role = None
    return role, name


def certificate_role(cert_pem: str) -> Role | None:
    """The role a certificate of this CA names (None if it names none)."""
    units = _load_certificate(cert_pem).subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    try:
        return Role(units[0].value) if len(units) == 1 else None
    except ValueError:
        return None


def _load_certificate(cert_pem: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(cert_pem.encode("ascii"))
    except (ValueError, TypeError, UnicodeEncodeError, AttributeError) as error:
        raise CertificateError(f"This is not a PEM certificate: {error}") from None


def _common_name(name: x509.Name, what: str) -> str:
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(values) != 1:
        raise CertificateError(f"The {what} must name exactly one common name, it names {len(values)}.")
    value = values[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _host_entry(host: str) -> x509.GeneralName | None:
    """``host`` as an IP or DNS subject alternative name, or None if it is neither."""
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        pass
    labels = host.split(".")
    if len(host) <= 253 and all(_DNS_LABEL.fullmatch(label) for label in labels):
        return x509.DNSName(host)
    return None


def _subject_alt_names(common_name: str, hosts: tuple[str, ...]) -> x509.SubjectAlternativeName:
    """localhost and 127.0.0.1 (every process of a devnet), the common name when it is a host
    name (a provider's address is one), and the extra ``hosts``. Dask does not check host names
    (each cluster has its own CA), but other TLS clients of the scheduler may."""
    names: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    candidates: list[x509.GeneralName | None] = [_host_entry(common_name)]  # "golem session" is none: left out
    for host in hosts:
        entry = _host_entry(host)
        if entry is None:
            raise CertificateError(f"{host!r} is neither an IP address nor a host name.")
        candidates.append(entry)
    names += [entry for entry in dict.fromkeys(candidates) if entry is not None and entry not in names]
    return x509.SubjectAlternativeName(names)


class SessionCA:
    """One session's certificate authority: a self-signed CA certificate and its key in memory."""

    def __init__(self, certificate: x509.Certificate, private_key: ec.EllipticCurvePrivateKey) -> None:
        self.certificate = certificate
        self._key = private_key

    def __repr__(self) -> str:
        return f"SessionCA({self.common_name!r}, until {self.certificate.not_valid_after_utc:%Y-%m-%d})"

    @classmethod
    def create(cls, name: str = "golem session", days: int = 7) -> SessionCA:
        """A new CA named ``name``, valid for ``days``; it can sign leaf certificates only."""
        if isinstance(days, bool) or not isinstance(days, int) or days < 1:
            raise CertificateError(f"days must be a whole number of at least 1, got {days!r}.")
        key = _new_key()
        subject = _name(name)
        now = _now()
        public = key.public_key()
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(now + datetime.timedelta(days=days))
            # path_length=0: a certificate this CA issues can never act as a CA itself.
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
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
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(certificate, key)

    @property
    def common_name(self) -> str:
        return _common_name(self.certificate.subject, "CA certificate")

    @property
    def certificate_pem(self) -> str:
        return _cert_pem(self.certificate)

    def issue(
        self,
        csr_pem: str,
        *,
        common_name: str,
        role: Role = Role.WORKER,
        days: int = 7,
        hosts: tuple[str, ...] = (),
    ) -> str:
        """A certificate (PEM) for the key in ``csr_pem``, naming ``common_name`` in ``role``.

        Refuses (:class:`CertificateError`) a request that does not parse, whose signature does
        not verify (the sender does not hold the key), whose subject's common name is not
        ``common_name``, or whose key is not EC P-256/P-384 or RSA of at least 2048 bits.
        Only the key and common name are taken from the request; the role and every extension
        are this CA's.
        """
        try:
            csr = x509.load_pem_x509_csr(csr_pem.encode("ascii"))
        except (ValueError, TypeError, UnicodeEncodeError, AttributeError) as error:
            raise CertificateError(f"This is not a PEM certificate signing request: {error}") from None
        if not csr.is_signature_valid:
            raise CertificateError("The certificate signing request's signature does not verify.")
        requested = _common_name(csr.subject, "certificate signing request")
        if requested != common_name:
            raise CertificateError(
                f"The certificate signing request is for {requested!r}; a certificate can only be issued "
                f"for {common_name!r}."
            )
        public = csr.public_key()
        if isinstance(public, ec.EllipticCurvePublicKey):
            if not isinstance(public.curve, (ec.SECP256R1, ec.SECP384R1)):
                raise CertificateError(f"EC keys must be on P-256 or P-384, not {public.curve.name}.")
        elif isinstance(public, rsa.RSAPublicKey):
            if public.key_size < MIN_RSA_BITS:
                raise CertificateError(f"RSA keys must have at least {MIN_RSA_BITS} bits, not {public.key_size}.")
        else:
            raise CertificateError(f"Keys of type {type(public).__name__} are not accepted; use EC P-256.")
        return _cert_pem(self._build(public, common_name, Role(role), days, hosts))

    def issue_own(
        self, common_name: str, *, role: Role = Role.WORKER, days: int = 7, hosts: tuple[str, ...] = ()
    ) -> tuple[str, str]:
        """A new key and its certificate, ``(cert_pem, key_pem)``, for the scheduler or the client."""
        key = _new_key()
        return _cert_pem(self._build(key.public_key(), common_name, Role(role), days, hosts)), _key_pem(key)

    def write_credentials(self, directory: Path | str, common_name: str, *, role: Role = Role.WORKER) -> Credentials:
        """Write ``ca.pem``, ``NAME.pem`` and ``NAME.key`` (mode 0600) for a new key into ``directory``.

        ``NAME`` is ``common_name`` with every character outside ``A-Za-z0-9._-`` replaced by ``_``.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        cert_pem, key_pem = self.issue_own(common_name, role=role)
        stem = _SAFE_NAME.sub("_", common_name)
        if stem in {"ca", ".", ".."}:
            stem = f"_{stem}"  # would overwrite the CA file or leave the directory
        credentials = Credentials(directory / "ca.pem", directory / f"{stem}.pem", directory / f"{stem}.key")
        credentials.ca_file.write_text(self.certificate_pem)
        credentials.cert_file.write_text(cert_pem)
        _write_private(credentials.key_file, key_pem)
        return credentials

    def _build(
        self,
        public: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
        common_name: str,
        role: Role,
        days: int,
        hosts: tuple[str, ...],
    ) -> x509.Certificate:
        if isinstance(days, bool) or not isinstance(days, int) or days < 1:
            raise CertificateError(f"days must be a whole number of at least 1, got {days!r}.")
        now = _now()
        # Nothing the CA signs outlives the CA: a verifier would refuse the chain anyway.
        until = min(now + datetime.timedelta(days=days), self.certificate.not_valid_after_utc)
        return (
            x509.CertificateBuilder()
            .subject_name(_name(common_name, role))
            .issuer_name(self.certificate.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(until)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=isinstance(public, rsa.RSAPublicKey),
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            # Every Dask process both connects (client) and listens (server): workers serve
            # the scheduler and each other.
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]),
                critical=False,
            )
            .add_extension(_subject_alt_names(common_name, tuple(hosts)), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by the owner only, never briefly readable by others."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        os.fchmod(fd, 0o600)  # the file may have existed with a wider mode
        file.write(text)


def make_key_and_csr(common_name: str) -> tuple[str, str]:
    """A new EC P-256 key and a certificate signing request for it: ``(key_pem, csr_pem)``."""
    key = _new_key()
    csr = x509.CertificateSigningRequestBuilder().subject_name(_name(common_name)).sign(key, hashes.SHA256())
    return _key_pem(key), csr.public_bytes(serialization.Encoding.PEM).decode("ascii")


def certificate_common_name(cert_pem: str) -> str:
    """The subject common name of a PEM certificate."""
    return _common_name(_load_certificate(cert_pem).subject, "certificate")


def verify_issued_by(cert_pem: str, ca_pem: str) -> bool:
    """Whether ``cert_pem`` was signed by the CA in ``ca_pem`` (and that certificate is a CA).

    Checks issuance only, not validity dates; anything that does not parse gives False.
    """
    try:
        cert = _load_certificate(cert_pem)
        ca = _load_certificate(ca_pem)
        constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
        if not constraints.ca:
            return False
        cert.verify_directly_issued_by(ca)
    except (CertificateError, x509.ExtensionNotFound, ValueError, TypeError, InvalidSignature):
        return False
    return True


def security_for(credentials: Path, role: str) -> Security:
    """Dask TLS settings from a credentials directory holding ca.pem, ROLE.pem and ROLE.key."""
    from distributed.security import Security  # only the processes that run Dask need it

    cert, key = str(credentials / f"{role}.pem"), str(credentials / f"{role}.key")
    return Security(
        tls_ca_file=str(credentials / "ca.pem"),
        tls_scheduler_cert=cert,
        tls_scheduler_key=key,
        tls_client_cert=cert,
        tls_client_key=key,
        tls_worker_cert=cert,
        tls_worker_key=key,
        require_encryption=True,
    )
