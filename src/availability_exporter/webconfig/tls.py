"""The server's TLS from the web config: the client-certificate policies Python can enforce,
and the ``ssl.SSLContext`` built from the certificate, key and CA files."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Final, NoReturn

__all__ = ["ClientAuth", "TLSFileError", "TLSSettings"]


class ClientAuth(StrEnum):
    """The client certificate policies that Python's ``ssl`` can enforce."""

    NO_CLIENT_CERT = "NoClientCert"
    REQUEST_CLIENT_CERT = "RequestClientCert"
    VERIFY_CLIENT_CERT_IF_GIVEN = "VerifyClientCertIfGiven"
    REQUIRE_AND_VERIFY_CLIENT_CERT = "RequireAndVerifyClientCert"

    @property
    def cert_reqs(self) -> ssl.VerifyMode:
        """The ``ssl`` verify mode that enforces this policy."""
        return _CERT_REQS[self]

    @property
    def needs_client_ca(self) -> bool:
        return self.cert_reqs is not ssl.CERT_NONE


_CERT_REQS: Final[Mapping[ClientAuth, ssl.VerifyMode]] = {
    ClientAuth.NO_CLIENT_CERT: ssl.CERT_NONE,
    # Go requests a certificate and ignores it; nothing here reads it, so not asking
    # gives the same access (Python cannot ask without verifying).
    ClientAuth.REQUEST_CLIENT_CERT: ssl.CERT_NONE,
    ClientAuth.VERIFY_CLIENT_CERT_IF_GIVEN: ssl.CERT_OPTIONAL,
    ClientAuth.REQUIRE_AND_VERIFY_CLIENT_CERT: ssl.CERT_REQUIRED,
}


class TLSFileError(Exception):
    """A TLS file could not be loaded; ``key`` is the config key that names it."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"tls_server_config.{key}: {message}")
        self.key = key
        self.message = message


def _refuse_passphrase() -> NoReturn:
    # Without a password callback OpenSSL prompts on the terminal for an encrypted
    # key, which would hang a daemon.
    raise TLSFileError(
        "key_file",
        "the key is encrypted; the web config has no passphrase setting, give an unencrypted key",
    )


@dataclass(frozen=True, kw_only=True)
class TLSSettings:
    """What the server's TLS context is built from; paths are absolute."""

    cert_file: Path
    key_file: Path
    client_auth_type: ClientAuth = ClientAuth.NO_CLIENT_CERT
    client_ca_file: Path | None = None
    min_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    max_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3
    ciphers: str | None = None
    """OpenSSL cipher list for TLS 1.2 and below; None keeps OpenSSL's defaults."""
    curve: str | None = None
    """OpenSSL name of the one key-exchange group; None keeps OpenSSL's defaults."""
    prefer_server_cipher_suites: bool = True

    def ssl_context(self) -> ssl.SSLContext:
        """Build the server context, reading the files now.

        Raises ``TLSFileError`` (its message names the config key) when a file
        does not load.
        """
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = self.min_version
        ctx.maximum_version = self.max_version
        if self.prefer_server_cipher_suites:
            ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
        else:
            ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
        _check_has_certificate(self.cert_file, "cert_file")
        try:
            ctx.load_cert_chain(self.cert_file, self.key_file, password=_refuse_passphrase)
        except ssl.SSLError as exc:
            # The certificate parsed above, so what is left is the key.
            if exc.reason == "KEY_VALUES_MISMATCH":
                message = (
                    f"{self.key_file} is not the private key of the certificate in"
                    f" {self.cert_file}; give the key that belongs to cert_file"
                )
            else:
                message = f"{self.key_file} holds no usable PEM private key ({exc})"
            raise TLSFileError("key_file", message) from exc
        except OSError as exc:
            raise TLSFileError("key_file", f"cannot read {self.key_file}: {exc}") from exc
        ctx.verify_mode = self.client_auth_type.cert_reqs
        if self.client_ca_file is not None and self.client_auth_type.needs_client_ca:
            _check_has_certificate(self.client_ca_file, "client_ca_file")
            ctx.load_verify_locations(self.client_ca_file)
        if self.ciphers is not None:
            ctx.set_ciphers(self.ciphers)
        if self.curve is not None:
            ctx.set_ecdh_curve(self.curve)
        return ctx


def _check_has_certificate(path: Path, key: str) -> None:
    """Fail with the config key's name unless ``path`` holds at least one PEM certificate."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
    except ssl.SSLError as exc:
        raise TLSFileError(key, f"{path} holds no PEM certificate ({exc.reason})") from exc
    except OSError as exc:
        raise TLSFileError(key, f"cannot read {path}: {exc.strerror or exc}") from exc
