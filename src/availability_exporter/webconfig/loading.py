"""The ``--web.config.file``: TLS, basic auth and response headers, in exporter-toolkit format.

The file has the shape that every Prometheus exporter reads (exporter-toolkit's
``docs/web-configuration.md``), so an SRE can reuse the file they already have::

    tls_server_config:
      cert_file: server.crt          # relative paths: relative to this file's directory
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert
      client_ca_file: clients-ca.crt
      min_version: TLS12
    http_server_config:
      headers:
        X-Content-Type-Options: nosniff
    basic_auth_users:
      prometheus: $2y$10$...         # bcrypt hash, e.g. from `htpasswd -nBC 10 "" | tr -d ':\\n'`

Everything is checked at start-up, and all problems are reported together
(:class:`WebConfigError`): unknown keys, a cert without a key, unreadable files, a
certificate and key that do not belong together, malformed bcrypt hashes. A bad
file is a start-up error, never a failure on the first scrape.

As in the toolkit, the file is read again when it changes (:class:`WebConfigFile`, looked
at on every request and TLS handshake), and so are the certificate files it names: a new
password, user or header applies to the next request, a rotated certificate to the next
connection, with no restart or reload. A changed file that does not load keeps the last
good one in force and logs why; so does one that turns TLS on or off, which needs a restart
because the listener is plain or TLS from the start.

Where Python's ``ssl`` module cannot do what the Go toolkit does, the file is
rejected with the reason rather than served with weaker security:

- ``client_auth_type: RequireAnyClientCert`` (Go requires a certificate but does
  not verify it; OpenSSL through Python verifies every certificate it requires).
- ``client_allowed_sans`` (needs a post-handshake hook Python's ``ssl`` lacks).
- ``min_version``/``max_version`` below TLS 1.2 (deprecated in Python, refused by
  OpenSSL's default security level).
- more than one ``curve_preferences`` entry (``SSLContext.set_ecdh_curve`` takes one).
- inline ``cert``/``key``/``client_ca`` and ``rate_limit`` (not implemented).

``client_auth_type: RequestClientCert`` is served as ``NoClientCert``: Go asks for a
certificate and ignores it; the exporter never reads one either, so access is the
same. ``http_server_config.http2`` is accepted and ignored: uvicorn serves HTTP/1.1
(its HTTP/2 needs an extra package this project does not ship).
"""

from __future__ import annotations

import logging
import re
import ssl
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import yaml

from availability_exporter import yamlnodes
from availability_exporter.webconfig.auth import ASGIApp, BasicAuthMiddleware
from availability_exporter.webconfig.files import FileWatch
from availability_exporter.webconfig.tls import (
    ClientAuth,
    LiveSSLContext,
    TLSFileError,
    TLSSettings,
)

__all__ = ["WebConfig", "WebConfigError", "WebConfigFile", "load_web_config"]

log = logging.getLogger(__name__)


class WebConfigError(Exception):
    """The web config file is invalid; the message lists every problem, one per line."""

    def __init__(self, path: Path, problems: Iterable[str]) -> None:
        self.path = path
        self.problems = tuple(problems)
        count = len(self.problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(
            f"invalid web config {path} ({count} problem{'s' if count != 1 else ''}):\n{lines}"
        )


_TLS_VERSIONS: Final[Mapping[str, ssl.TLSVersion]] = {
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
_OLD_TLS_VERSIONS: Final = frozenset({"TLS10", "TLS11"})

# Go's names (crypto/tls CipherSuites()) to OpenSSL's. TLS 1.3 suites map to None:
# neither Go nor OpenSSL's cipher list lets them be chosen, so they are accepted and
# have no effect, as in the Go toolkit.
_CIPHER_SUITES: Final[Mapping[str, str | None]] = {
    "TLS_AES_128_GCM_SHA256": None,
    "TLS_AES_256_GCM_SHA384": None,
    "TLS_CHACHA20_POLY1305_SHA256": None,
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
}

_CURVES: Final[Mapping[str, str]] = {
    "CurveP256": "prime256v1",
    "CurveP384": "secp384r1",
    "CurveP521": "secp521r1",
    "X25519": "X25519",
}

# The only headers the toolkit lets a web config set, with their allowed values
# (empty: any value). Names are matched exactly, as in Go.
_HEADERS: Final[Mapping[str, tuple[str, ...]]] = {
    "Content-Security-Policy": (),
    "Strict-Transport-Security": (),
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": (),
}

_BCRYPT_HASH: Final = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
_HASH_HELP: Final = (
    "allowed: $2a$, $2b$ or $2y$, a two-digit cost 04-31, '$', then 53 characters of salt"
    " and hash, as made by: htpasswd -nBC 10 \"\" | tr -d ':\\n'"
)
# bcrypt uses the first 72 bytes of a password; Go and htpasswd silently truncate,


def _empty() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True, kw_only=True)
class WebConfig:
    """A loaded web config; the default (no file) is plain HTTP with no auth and no headers."""

    tls: TLSSettings | None = None
    users: Mapping[str, bytes] = field(default_factory=_empty)
    """User name to bcrypt hash."""
    headers: Mapping[str, str] = field(default_factory=_empty)
    """Response headers added to every HTTP response."""
    source: WebConfigFile | None = field(default=None, compare=False, repr=False)
    """The file this was read from; what :meth:`wrap` and the TLS context serve follows it."""

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    def uvicorn_ssl_kwargs(self) -> dict[str, Any]:
        """``uvicorn.Config`` keyword arguments for this config's TLS; empty for plain HTTP.

        Keys: ``ssl_certfile``, ``ssl_keyfile``, ``ssl_ca_certs``, ``ssl_cert_reqs``,
        ``ssl_ciphers``, ``ssl_context_factory``. The plain ``ssl_*`` values are what
        uvicorn can express itself (they make ``Config.is_ssl`` true and document the
        setup); ``ssl_context_factory`` builds the context uvicorn actually serves
        with, because uvicorn has no setting for min/max version, server cipher
        preference or the curve, and because that context follows the files.
        """
        tls = self.tls
        if tls is None:
            return {}
        source = self.source

        def settings() -> TLSSettings:
            # The file cannot turn TLS off while serving (WebConfigFile refuses it), so
            # None only means there is no file to follow.
            current = None if source is None else source.current().tls
            return tls if current is None else current

        def factory(_config: Any, _default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
            return LiveSSLContext(settings)

        return {
            "ssl_certfile": str(tls.cert_file),
            "ssl_keyfile": str(tls.key_file),
            "ssl_ca_certs": None if tls.client_ca_file is None else str(tls.client_ca_file),
            "ssl_cert_reqs": int(tls.client_auth_type.cert_reqs),
            "ssl_ciphers": tls.ciphers,
            "ssl_context_factory": factory,
        }

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """``app`` behind basic auth and the configured headers.

        With a file to follow, the middleware is always there, since users may be added to
        the file later; without one, ``app`` itself when there are neither users nor headers.
        """
        if self.source is not None:
            return BasicAuthMiddleware(app, source=self.source.current)
        if not self.users and not self.headers:
            return app
        return BasicAuthMiddleware(app, users=self.users, headers=self.headers)


class WebConfigFile:
    """The web config file as last read successfully; re-read when it changes.

    :meth:`current` costs a ``stat`` when nothing changed; the file is read and checked
    again only when its stat and then its content hash differ. Not thread-safe: it is used
    from the event loop (each request and each TLS handshake).
    """

    def __init__(self, path: Path) -> None:
        """Read the file now; raises WebConfigError listing every problem."""
        self.path = path
        self._watch = FileWatch()
        # Primed before the read, so a write that lands during it is seen at the next look.
        self._watch.changed([path])
        self._config = _load(path, self)

    def current(self) -> WebConfig:
        """The config in force: the file's, or the last good one if the file changed badly."""
        if not self._watch.changed([self.path]):
            return self._config
        try:
            config = _load(self.path, self)
        except WebConfigError as exc:
            log.error("%s\nkeeping the last good web config", exc)
            return self._config
        if (config.tls is None) != (self._config.tls is None):
            log.error(
                "web config %s: turning TLS %s needs a restart; keeping the last good web config",
                self.path,
                "off" if config.tls is None else "on",
            )
            return self._config
        self._config = config
        log.info("web config %s reloaded", self.path)
        return config


# ---------------------------------------------------------------------------
# Loading


_TOP_KEYS: Final = ("tls_server_config", "http_server_config", "basic_auth_users")
_TLS_KEYS: Final = (
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
    "min_version",
    "max_version",
    "cipher_suites",
    "prefer_server_cipher_suites",
    "curve_preferences",
)
_HTTP_KEYS: Final = ("http2", "headers")

# Keys of the toolkit format that are rejected with a reason instead of "unknown key".
_NOT_SUPPORTED: Final[Mapping[str, str]] = {
    "rate_limit": "not supported by availability-exporter; remove it (rate-limit in a proxy)",
    "tls_server_config.cert": "inline PEM is not supported; put it in a file and use cert_file",
    "tls_server_config.key": "inline PEM is not supported; put it in a file and use key_file",
    "tls_server_config.client_ca": (
        "inline PEM is not supported; put it in a file and use client_ca_file"
    ),
    "tls_server_config.client_allowed_sans": (
        "not supported: Python's ssl module has no hook to check client certificate SANs;"
        " issue client certificates from a dedicated CA and use client_ca_file instead"
    ),
}

_Entries = dict[str, tuple[yaml.Node, yaml.Node]]


class _Reader:
    """Checks the web config's nodes, turning them into Python, collecting problems with lines."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._problems: list[tuple[int, str]] = []

    @property
    def problems(self) -> list[str]:
        """Every problem so far, in file order."""
        return [text for _, text in sorted(self._problems, key=lambda p: p[0])]

    def problem(self, node: yaml.Node, key: str, message: str) -> None:
        line = yamlnodes.line(node)
        where = key or "top level"
        self._problems.append((line, f"{self.path}:{line}: {where}: {message}"))

    def mapping(self, node: yaml.Node, key: str, allowed: Iterable[str]) -> _Entries:
        """A mapping node's entries; reports non-mappings, bad or unknown keys, duplicates."""
        allowed = tuple(allowed)
        if not isinstance(node, yaml.MappingNode):
            self.problem(node, key, f"must be a mapping with the keys {', '.join(allowed)}")
            return {}
        scan = yamlnodes.scan_keys(node, allowed)
        for bad in scan.problems:
            full = f"{key}.{bad.key}" if key else str(bad.key)
            if bad.why is yamlnodes.Why.NOT_A_STRING:
                self.problem(
                    bad.node, key, f"key {yamlnodes.construct(bad.node)!r} must be a string"
                )
            elif bad.why is yamlnodes.Why.DUPLICATE:
                self.problem(bad.node, full, "duplicate key")
            elif full in _NOT_SUPPORTED:
                self.problem(bad.node, full, _NOT_SUPPORTED[full])
            else:
                self.problem(bad.node, full, f"unknown key; allowed: {', '.join(allowed)}")
        return scan.entries

    def string(self, node: yaml.Node, key: str) -> str | None:
        """A string value; None when null or empty (unset, as in Go)."""
        value = yamlnodes.construct(node)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            self.problem(node, key, f"must be a string, got {type(value).__name__}")
            return None
        return value

    def boolean(self, node: yaml.Node, key: str, default: bool) -> bool:
        if yamlnodes.is_null(node):
            return default
        value = yamlnodes.boolean(node)
        if value is None:
            self.problem(node, key, "must be true or false")
            return default
        return value

    def strings(self, node: yaml.Node, key: str) -> list[tuple[yaml.Node, str]]:
        if yamlnodes.is_null(node):
            return []
        if not isinstance(node, yaml.SequenceNode):
            self.problem(node, key, "must be a list of strings")
            return []
        items: list[tuple[yaml.Node, str]] = []
        for item in node.value:
            value = yamlnodes.construct(item)
            if isinstance(value, str):
                items.append((item, value))
            else:
                self.problem(item, key, f"list items must be strings, got {value!r}")
        return items


def load_web_config(path: Path) -> WebConfig:
    """Read and check a web config file; raises WebConfigError listing every problem.

    What the result serves (:meth:`WebConfig.wrap`, its TLS context) follows the file as
    it changes.
    """
    return WebConfigFile(path).current()


def _load(path: Path, source: WebConfigFile) -> WebConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise WebConfigError(path, [f"{path}: cannot read the web config: {reason}"]) from exc
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise WebConfigError(path, [f"{path}{line}: not valid YAML: {problem}"]) from exc
    except RecursionError as exc:
        raise WebConfigError(path, [f"{path}: not valid YAML: nested too deeply"]) from exc
    reader = _Reader(path)
    if root is None or yamlnodes.is_null(root):
        return WebConfig(source=source)  # An empty file means plain HTTP, as in the toolkit.
    top = reader.mapping(root, "", _TOP_KEYS)
    tls = _read_tls(reader, *top["tls_server_config"]) if "tls_server_config" in top else None
    headers = (
        _read_http(reader, top["http_server_config"][1]) if "http_server_config" in top else {}
    )
    users = _read_users(reader, top["basic_auth_users"][1]) if "basic_auth_users" in top else {}
    if reader.problems:
        raise WebConfigError(path, reader.problems)
    return WebConfig(
        tls=tls, users=MappingProxyType(users), headers=MappingProxyType(headers), source=source
    )


def _read_tls(reader: _Reader, section_key: yaml.Node, node: yaml.Node) -> TLSSettings | None:
    if yamlnodes.is_null(node):
        return None
    entries = reader.mapping(node, "tls_server_config", _TLS_KEYS)
    if not entries:
        return None
    problems_before = len(reader.problems)

    def key_node(name: str) -> yaml.Node:
        return entries[name][0] if name in entries else section_key

    def text(name: str) -> str | None:
        if name not in entries:
            return None
        return reader.string(entries[name][1], f"tls_server_config.{name}")

    def file(name: str) -> Path | None:
        value = text(name)
        if value is None:
            return None
        # Relative paths are relative to the web config's directory, as in the toolkit.
        path = reader.path.parent / value
        try:
            with path.open("rb"):
                pass
        except OSError as exc:
            reader.problem(
                key_node(name),
                f"tls_server_config.{name}",
                f"cannot read {path}: {exc.strerror or exc}"
                " (relative paths are relative to the web config's directory)",
            )
        return path

    cert_file, key_file, client_ca_file = (
        file("cert_file"),
        file("key_file"),
        file("client_ca_file"),
    )
    if cert_file is None or key_file is None:
        missing, given = (
            ("cert_file", "key_file") if cert_file is None else ("key_file", "cert_file")
        )
        if cert_file is None and key_file is None:
            message = "cert_file and key_file are missing; TLS needs both (or remove the section)"
        else:
            message = f"{given} is set but {missing} is not; set both (TLS) or neither (plain HTTP)"
        reader.problem(section_key, "tls_server_config", message)

    client_auth = ClientAuth.NO_CLIENT_CERT
    auth_name = text("client_auth_type")
    auth_key = "tls_server_config.client_auth_type"
    if auth_name in ("RequireAnyClientCert", "RequireClientCert"):
        reader.problem(
            key_node("client_auth_type"),
            auth_key,
            f"{auth_name} cannot be enforced (it accepts unverified certificates, Python's ssl"
            " verifies every certificate it requires); use RequireAndVerifyClientCert with"
            " client_ca_file",
        )
    elif auth_name is not None and auth_name not in ClientAuth.__members__.values():
        reader.problem(
            key_node("client_auth_type"),
            auth_key,
            f"unknown value {auth_name!r}; allowed: {', '.join(ClientAuth)}",
        )
    else:
        if auth_name is not None:
            client_auth = ClientAuth(auth_name)
        if client_auth.needs_client_ca and client_ca_file is None:
            reader.problem(
                key_node("client_auth_type"),
                auth_key,
                f"{client_auth} needs client_ca_file (the CA that signs client certificates)",
            )
        if client_ca_file is not None and client_auth is ClientAuth.NO_CLIENT_CERT:
            # As in the toolkit: a CA with no policy would silently check nothing.
            reader.problem(
                key_node("client_ca_file"),
                "tls_server_config.client_ca_file",
                "client_ca_file is set but client_auth_type is NoClientCert (the default);"
                " set client_auth_type: RequireAndVerifyClientCert to check client certificates",
            )

    versions = {"min_version": ssl.TLSVersion.TLSv1_2, "max_version": ssl.TLSVersion.TLSv1_3}
    for name in versions:
        value = text(name)
        if value is None:
            continue
        key = f"tls_server_config.{name}"
        if value in _TLS_VERSIONS:
            versions[name] = _TLS_VERSIONS[value]
        elif value in _OLD_TLS_VERSIONS:
            reader.problem(
                key_node(name),
                key,
                f"{value} is not allowed (deprecated, refused by OpenSSL's default security level);"
                " allowed: TLS12, TLS13",
            )
        else:
            reader.problem(
                key_node(name), key, f"unknown TLS version {value!r}; allowed: TLS12, TLS13"
            )
    if versions["min_version"] > versions["max_version"]:
        reader.problem(
            key_node("min_version"),
            "tls_server_config.min_version",
            "min_version is above max_version; allowed: min_version <= max_version",
        )

    ciphers: list[str] = []
    if "cipher_suites" in entries:
        key = "tls_server_config.cipher_suites"
        for item, name in reader.strings(entries["cipher_suites"][1], key):
            if name not in _CIPHER_SUITES:
                reader.problem(
                    item,
                    key,
                    f"unknown cipher suite {name!r}; allowed: {', '.join(_CIPHER_SUITES)}",
                )
            elif (openssl_name := _CIPHER_SUITES[name]) is not None:
                ciphers.append(openssl_name)

    curves: list[str] = []
    if "curve_preferences" in entries:
        key = "tls_server_config.curve_preferences"
        items = reader.strings(entries["curve_preferences"][1], key)
        for item, name in items:
            if name in _CURVES:
                curves.append(_CURVES[name])
            else:
                reader.problem(item, key, f"unknown curve {name!r}; allowed: {', '.join(_CURVES)}")
        if len(items) > 1:
            reader.problem(
                key_node("curve_preferences"),
                key,
                "list exactly one curve (Python's ssl can set only one),"
                " or remove curve_preferences to keep OpenSSL's defaults",
            )

    prefer_server = True
    if "prefer_server_cipher_suites" in entries:
        prefer_server = reader.boolean(
            entries["prefer_server_cipher_suites"][1],
            "tls_server_config.prefer_server_cipher_suites",
            True,
        )

    if len(reader.problems) > problems_before or cert_file is None or key_file is None:
        return None
    settings = TLSSettings(
        cert_file=cert_file.absolute(),
        key_file=key_file.absolute(),
        client_auth_type=client_auth,
        client_ca_file=None if client_ca_file is None else client_ca_file.absolute(),
        min_version=versions["min_version"],
        max_version=versions["max_version"],
        ciphers=":".join(ciphers) or None,
        curve=curves[0] if curves else None,
        prefer_server_cipher_suites=prefer_server,
    )
    try:
        # Built once now so that a bad pair fails at start-up, not at the first handshake.
        settings.ssl_context()
    except TLSFileError as exc:
        reader.problem(key_node(exc.key), f"tls_server_config.{exc.key}", exc.message)
        return None
    except ssl.SSLError as exc:
        reader.problem(section_key, "tls_server_config", f"OpenSSL refused the settings: {exc}")
        return None
    return settings


def _read_http(reader: _Reader, node: yaml.Node) -> dict[str, str]:
    if yamlnodes.is_null(node):
        return {}
    entries = reader.mapping(node, "http_server_config", _HTTP_KEYS)
    if "http2" in entries:
        # Checked for type only: uvicorn serves HTTP/1.1 here (see the module docstring).
        reader.boolean(entries["http2"][1], "http_server_config.http2", True)
    if "headers" not in entries:
        return {}
    headers_node = entries["headers"][1]
    if yamlnodes.is_null(headers_node):
        return {}
    headers: dict[str, str] = {}
    for name, (_, value_node) in reader.mapping(
        headers_node, "http_server_config.headers", _HEADERS
    ).items():
        key = f"http_server_config.headers.{name}"
        value = reader.string(value_node, key)
        if value is None:
            continue  # Blank means unset, as documented by the toolkit.
        allowed = _HEADERS[name]
        if allowed and value not in allowed:
            reader.problem(
                value_node, key, f"invalid value {value!r}; allowed: {', '.join(allowed)}"
            )
        elif not _is_header_value(value):
            reader.problem(
                value_node, key, "must be printable Latin-1 text without control characters"
            )
        else:
            headers[name] = value
    return headers


def _is_header_value(value: str) -> bool:
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return not any(ord(c) < 0x20 or ord(c) == 0x7F for c in value)


def _read_users(reader: _Reader, node: yaml.Node) -> dict[str, bytes]:
    if yamlnodes.is_null(node):
        return {}
    if not isinstance(node, yaml.MappingNode):
        reader.problem(node, "basic_auth_users", "must be a mapping of user name to bcrypt hash")
        return {}
    users: dict[str, bytes] = {}
    for key_node, value_node in node.value:
        name = yamlnodes.construct(key_node)
        if not isinstance(name, str):
            reader.problem(
                key_node, "basic_auth_users", f"user name {name!r} must be a string; quote it"
            )
            continue
        key = f"basic_auth_users.{name}"
        if name in users:
            reader.problem(key_node, key, "duplicate user")
            continue
        if ":" in name:
            # Basic auth splits "user:password" at the first colon.
            reader.problem(key_node, key, "user name contains ':' and could never log in")
            continue
        value = yamlnodes.construct(value_node)
        if not isinstance(value, str) or not _BCRYPT_HASH.fullmatch(value):
            reader.problem(value_node, key, f"not a bcrypt hash (value not shown); {_HASH_HELP}")
            continue
        users[name] = value.encode("ascii")
    return users
