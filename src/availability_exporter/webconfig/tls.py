"""The server's TLS from the web config: the client-certificate policies Python can enforce,
and the ``ssl.SSLContext`` built from the certificate, key and CA files.

:class:`LiveSSLContext` is what the server listens with. Every new connection asks it for
an ``SSLObject`` (``wrap_bio``, which asyncio and uvloop call once per connection, before
the handshake); it answers from the context of the current settings and files, rebuilt when
they changed. So a rotated certificate is served to the next connection without a restart,
and unlike swapping certificates in an SNI callback every setting of the new file applies,
client-certificate policy and protocol versions included. A change that does not load (a
key that does not match its certificate, say, half-way through a rotation) is logged and
the last good context keeps serving.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, NoReturn

from availability_exporter.webconfig.files import FileWatch

__all__ = ["ClientAuth", "LiveSSLContext", "TLSFileError", "TLSSettings"]

log = logging.getLogger(__name__)


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

    @property
    def files(self) -> tuple[Path, ...]:
        """The files the context is read from."""
        ca = () if self.client_ca_file is None else (self.client_ca_file,)
        return (self.cert_file, self.key_file, *ca)

    def ssl_context(self) -> ssl.SSLContext:
        """Build the server context, reading the files now.

        Raises ``TLSFileError`` (its message names the config key) when a file
        does not load.
        """
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.configure(ctx)
        return ctx

    def configure(self, ctx: ssl.SSLContext) -> None:
        """Set up a server context from these settings, reading the files now."""
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


def _check_has_certificate(path: Path, key: str) -> None:
    """Fail with the config key's name unless ``path`` holds at least one PEM certificate."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
    except ssl.SSLError as exc:
        raise TLSFileError(key, f"{path} holds no PEM certificate ({exc.reason})") from exc
    except OSError as exc:
        raise TLSFileError(key, f"cannot read {path}: {exc.strerror or exc}") from exc


class LiveSSLContext(ssl.SSLContext):
    """A server context whose connections get the context of the current settings and files.

    ``settings`` is asked on every new connection (a ``stat`` of the web config); the files
    it names are ``stat``-ed too and hashed when that moved. The object itself is also set
    up from the settings at start, so a server that wraps sockets itself (``wrap_socket``,
    which asyncio and uvloop do not use) gets those.
    """

    _settings: Callable[[], TLSSettings]
    _watch: FileWatch
    _built_from: TLSSettings
    _current: ssl.SSLContext

    def __new__(cls, *_args: Any, **_kwargs: Any) -> LiveSSLContext:
        # ssl.SSLContext.__new__ takes the protocol; this class takes the settings instead.
        return super().__new__(cls, ssl.PROTOCOL_TLS_SERVER)

    def __init__(self, settings: Callable[[], TLSSettings]) -> None:
        """Build the first context now; raises TLSFileError when its files do not load."""
        first = settings()
        self._settings = settings
        self._watch = FileWatch()
        self._watch.changed(first.files)
        first.configure(self)
        self._built_from = first
        self._current = first.ssl_context()

    def current(self) -> ssl.SSLContext:
        """The context for a new connection: rebuilt if the settings or files changed."""
        settings = self._settings()
        files_changed = self._watch.changed(settings.files)
        if settings == self._built_from and not files_changed:
            return self._current
        # Whatever the outcome, this version of the files has had its try: a bad one is
        # logged once, not on every handshake, and retried when it changes again.
        self._built_from = settings
        try:
            self._current = settings.ssl_context()
        except TLSFileError as exc:
            log.error("web config: %s; still serving the last good certificate", exc)
        except (ssl.SSLError, OSError, ValueError) as exc:
            log.error(
                "web config: TLS settings refused (%s); still serving the last good ones", exc
            )
        else:
            log.info("web config: TLS certificate and settings reloaded")
        return self._current

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        return self.current().wrap_bio(
            incoming,
            outgoing,
            server_side=server_side,
            server_hostname=server_hostname,
            session=session,
        )
