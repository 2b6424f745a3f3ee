"""Test certificates made on the spot: a CA, a good leaf, and three kinds of bad ones.

Everything is built with `cryptography`'s x509 builder through one function, so the
good and the bad certificates differ only in the field that makes them bad:

| kind          | signed by | names                   | validity          | client verify error |
|---------------|-----------|-------------------------|-------------------|---------------------|
| `GOOD`        | the CA    | 127.0.0.1, localhost    | now-1d .. now+30d | none                |
| `EXPIRED`     | the CA    | 127.0.0.1, localhost    | now-30d .. now-1d | 10 cert has expired |
| `SELF_SIGNED` | itself    | 127.0.0.1, localhost    | now-1d .. now+30d | 18 self-signed leaf |
| `WRONG_HOST`  | the CA    | wrong.example only      | now-1d .. now+30d | 64 by IP, 62 by name|

A client that trusts `CertSet.ca_path` (e.g. via `SSL_CERT_FILE`) verifies `GOOD`.
"""

from __future__ import annotations

import datetime
import enum
import ipaddress
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "GOOD_NAMES",
    "VERIFY_CODE_BY_IP",
    "VERIFY_CODE_BY_NAME",
    "WRONG_HOST_NAME",
    "CertKind",
    "CertSet",
    "IssuedCert",
    "make_certs",
]


class CertKind(enum.StrEnum):
    """Which certificate a TLS listener presents."""

    GOOD = "good"
    EXPIRED = "expired"
    SELF_SIGNED = "self-signed"
    WRONG_HOST = "wrong-host"


GOOD_NAMES: Final = ("127.0.0.1", "localhost")
WRONG_HOST_NAME: Final = "wrong.example"

# OpenSSL X509_V_ERR_* codes a verifying client reports in SSLCertVerificationError.verify_code.
# The host check differs with how the client names the server: an IP address
# is matched against IP SANs (IP_ADDRESS_MISMATCH), a name against DNS SANs.
_CERT_HAS_EXPIRED: Final = 10
_DEPTH_ZERO_SELF_SIGNED_CERT: Final = 18
_HOSTNAME_MISMATCH: Final = 62
_IP_ADDRESS_MISMATCH: Final = 64

VERIFY_CODE_BY_IP: Final[Mapping[CertKind, int]] = {
    CertKind.EXPIRED: _CERT_HAS_EXPIRED,
    CertKind.SELF_SIGNED: _DEPTH_ZERO_SELF_SIGNED_CERT,
    CertKind.WRONG_HOST: _IP_ADDRESS_MISMATCH,
}
"""Expected verify_code when the client connects as `127.0.0.1`."""

VERIFY_CODE_BY_NAME: Final[Mapping[CertKind, int]] = {
    CertKind.EXPIRED: _CERT_HAS_EXPIRED,
    CertKind.SELF_SIGNED: _DEPTH_ZERO_SELF_SIGNED_CERT,
    CertKind.WRONG_HOST: _HOSTNAME_MISMATCH,
}
"""Expected verify_code when the client connects as `localhost`."""

_DAY: Final = datetime.timedelta(days=1)


@dataclass(frozen=True, slots=True)
class IssuedCert:
    """One leaf certificate and its key, as PEM files on disk."""

    kind: CertKind
    cert_path: Path
    key_path: Path
    cert_pem: bytes
    not_after: datetime.datetime
    """UTC, timezone-aware; what an exporter should report as the expiry timestamp."""

    def server_context(self) -> ssl.SSLContext:
        """A server-side SSLContext presenting this certificate."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_path, self.key_path)
        return context


@dataclass(frozen=True, slots=True)
class CertSet:
    """The CA and one leaf of each `CertKind`, all under `directory`."""

    directory: Path
    ca_path: Path
    """PEM of the CA: point SSL_CERT_FILE or a verify= option at it."""
    ca_pem: bytes
    ca_not_after: datetime.datetime
    leaves: Mapping[CertKind, IssuedCert]

    def __getitem__(self, kind: CertKind) -> IssuedCert:
        return self.leaves[kind]

    def client_context(self) -> ssl.SSLContext:
        """A verifying client SSLContext that trusts only this CA."""
        return ssl.create_default_context(cafile=str(self.ca_path))


def make_certs(directory: Path, *, now: datetime.datetime | None = None) -> CertSet:
    """Create the CA and every kind of leaf in `directory` (e.g. pytest's tmp_path)."""
    now = now if now is not None else datetime.datetime.now(datetime.UTC)
    directory.mkdir(parents=True, exist_ok=True)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("availability-exporter test CA")
    ca_cert = _build(
        subject=ca_name,
        key=ca_key,
        issuer=ca_name,
        issuer_key=ca_key,
        sans=(),
        not_before=now - _DAY,
        not_after=now + 30 * _DAY,
        is_ca=True,
    )
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    ca_path = directory / "ca.pem"
    ca_path.write_bytes(ca_pem)

    leaves: dict[CertKind, IssuedCert] = {}
    for kind in CertKind:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = _name(f"{kind.value} leaf")
        self_signed = kind is CertKind.SELF_SIGNED
        expired = kind is CertKind.EXPIRED
        not_before = now - 30 * _DAY if expired else now - _DAY
        not_after = now - _DAY if expired else now + 30 * _DAY
        cert = _build(
            subject=subject,
            key=key,
            issuer=subject if self_signed else ca_name,
            issuer_key=key if self_signed else ca_key,
            sans=(WRONG_HOST_NAME,) if kind is CertKind.WRONG_HOST else GOOD_NAMES,
            not_before=not_before,
            not_after=not_after,
            is_ca=False,
        )
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        cert_path = directory / f"{kind.value}.pem"
        key_path = directory / f"{kind.value}.key"
        cert_path.write_bytes(cert_pem)
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        leaves[kind] = IssuedCert(
            kind=kind,
            cert_path=cert_path,
            key_path=key_path,
            cert_pem=cert_pem,
            not_after=cert.not_valid_after_utc,
        )

    return CertSet(
        directory=directory,
        ca_path=ca_path,
        ca_pem=ca_pem,
        ca_not_after=ca_cert.not_valid_after_utc,
        leaves=leaves,
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _build(
    *,
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    sans: tuple[str, ...],
    not_before: datetime.datetime,
    not_after: datetime.datetime,
    is_ca: bool,
) -> x509.Certificate:
    # Whole seconds: X.509 times have no fraction, and tests compare not_after exactly.
    not_before = not_before.replace(microsecond=0)
    not_after = not_after.replace(microsecond=0)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if is_ca:
        builder = builder.add_extension(
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
    else:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        ).add_extension(x509.SubjectAlternativeName([_san(n) for n in sans]), critical=False)
        if issuer_key is not key:
            # OpenSSL 3 builds chains more reliably when the AKI names the issuer's key.
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                critical=False,
            )
    return builder.sign(issuer_key, hashes.SHA256())
