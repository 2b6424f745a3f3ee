"""The endpoints file: the Fetch YAML format, strict validation, errors with line numbers.

The file is a YAML list of mappings (``name``, ``url``, optional ``method``, ``headers``,
``body`` and our extensions).  It is *composed* into YAML nodes rather than loaded into Python
objects so that every problem can name its line, and so that nothing nested deeper than the
format allows is ever walked (an alias bomb stays a handful of shared nodes).  All problems are
collected and reported together.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import ipaddress
import os
import re
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote, quote_plus, unquote, urlsplit

import httpx
import yaml

from availability_exporter import checks, maintenance, yamlnodes
from availability_exporter.model import Endpoint, TlsOptions

try:  # The C loader parses a 10,000-endpoint file several times faster.
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

MAX_CONFIG_BYTES = 64 * 1024 * 1024
DEFAULT_TIMEOUT = 10.0
DEFAULT_LATENCY_THRESHOLD = 0.5

REQUIRED_KEYS = ("name", "url")
OPTIONAL_KEYS = (
    "method",
    "headers",
    "body",
    "timeout",
    "latency_threshold",
    "follow_redirects",
    "verify_tls",
    "http2",
    "proxy",
    "tls",
    "ip_family",
    "expect",
    "maintenance",
    "redirect_keep_headers",
)
TLS_KEYS = ("ca_file", "cert_file", "key_file", "server_name")
IP_FAMILIES = ("any", "ipv4", "ipv6")
ALLOWED_KEYS = REQUIRED_KEYS + OPTIONAL_KEYS

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# "$" and "{" are excluded inside the braces so an unclosed "${" fails in linear time.
_ENV_REF = re.compile(r"\$\{([^${}]*)\}")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Secrets shorter than this are not worth redacting and would mangle ordinary text.
_MIN_SECRET_LEN = 4


class ConfigError(Exception):
    """The endpoints file is unusable; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class Config:
    """A loaded endpoints file: the endpoints in file order and a digest of its bytes."""

    path: str
    endpoints: tuple[Endpoint, ...]
    digest: str


@dataclass(frozen=True, slots=True)
class Defaults:
    """Process-wide values that endpoints inherit unless they set their own."""

    interval: float = 15.0
    timeout: float = DEFAULT_TIMEOUT
    latency_threshold: float = DEFAULT_LATENCY_THRESHOLD


def default_timeout(interval: float) -> float:
    """10 s, or 80 % of the interval when that is shorter, so a probe ends inside its cycle."""
    return DEFAULT_TIMEOUT if interval >= DEFAULT_TIMEOUT / 0.8 else round(0.8 * interval, 6)


def domain_of(url: str) -> str:
    """The availability domain of a URL: host, lower-cased, without port, userinfo or final dot."""
    host = urlsplit(url).hostname or ""
    return host.rstrip(".").lower()


def parse_url(url: str) -> httpx.URL:
    """Parse a URL to probe once, with httpx; raises ValueError when it cannot be requested."""
    urlsplit(url).port  # noqa: B018 - raises ValueError for a port out of 0-65535
    parsed = httpx.URL(url)
    scheme = parsed.scheme
    if scheme not in ("http", "https"):
        raise ValueError(f"scheme must be http or https, not {scheme or 'missing'!r}")
    if not parsed.host:
        raise ValueError("the URL has no host")
    return parsed


def without_userinfo(url: httpx.URL) -> str:
    """The URL as text without its credentials (for keys, pages and logs)."""
    return str(url.copy_with(username=None, password=None) if url.userinfo else url)


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret in ``text`` so it can be logged or shown.

    A target that echoes the request can hand a secret back encoded or cut short, so each
    secret is also looked for percent-encoded (any hex case, ``+`` for spaces), base64-encoded
    (standard and URL-safe, at each of the three alignments it can take inside a longer
    base64 text, as in ``Basic dXNlcjpwYXNz``), and as a prefix of 8 or more characters of any
    of those forms.  A secret shorter than 4 characters (and each of its forms) is replaced
    only where it stands alone, with no letter or digit next to it: replacing "ab" everywhere
    would garble ordinary words.  So such a secret inside a longer base64 text is not found;
    config errors never quote expanded ${VAR} values for that reason.
    """
    spans: list[tuple[int, int]] = []
    # Lower-cased character by character, so that offsets in ``folded`` are offsets in ``text``.
    folded = "".join(c if len(c.lower()) != 1 else c.lower() for c in text)
    for secret in secrets:
        if not secret:
            continue
        for form, case_blind in _secret_forms(secret):
            if len(secret) < _MIN_SECRET_LEN:
                pattern = rf"(?<![0-9A-Za-z]){re.escape(form)}(?![0-9A-Za-z])"
                flags = re.IGNORECASE if case_blind else 0
                spans += [m.span() for m in re.finditer(pattern, text, flags)]
                continue
            spans += _occurrences(folded if case_blind else text,
                                  form.lower() if case_blind else form)
    if not spans:
        return text
    spans.sort()
    out: list[str] = []
    end = 0
    for start, stop in spans:
        if start >= end:
            out.append(text[end:start])
            out.append("<redacted>")
            end = stop
        else:
            end = max(end, stop)
    out.append(text[end:])
    return "".join(out)


# A prefix this long of a secret (or of one of its encodings) is redacted where it appears.
_MIN_PREFIX = 8


@functools.lru_cache(maxsize=4096)  # the same few secrets are redacted probe after probe
def _secret_forms(secret: str) -> tuple[tuple[str, bool], ...]:
    """The forms a secret can take in an echo: (text, compare ignoring case)."""
    raw = secret.encode("utf-8")
    forms = [(secret, False)]
    # Percent-encoding: its hex digits may come back in either case (compared case-blind).
    forms += [(quote(secret, safe=""), True), (quote(secret), True), (quote_plus(secret), True)]
    for shift in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            encoded = encode(b"\0" * shift + raw).decode("ascii")
            # Characters mixing in bits of the neighbours differ from echo to echo: drop them.
            start = (4 * shift + 2) // 3
            stop = len(encoded.rstrip("=")) - (1 if (shift + len(raw)) % 3 else 0)
            core = encoded[start:stop]
            if shift == 0:
                forms.append((encoded, False))
            if len(core) >= _MIN_PREFIX:
                forms.append((core, False))
    return tuple(forms)


def _occurrences(text: str, form: str) -> list[tuple[int, int]]:
    """Where ``form`` appears in ``text``, whole or cut to a prefix of 8 or more characters."""
    if len(form) < _MIN_PREFIX:
        found: list[tuple[int, int]] = []
        at = text.find(form)
        while at >= 0 and len(found) < 10_000:
            found.append((at, at + len(form)))
            at = text.find(form, at + len(form))
        return found
    head = form[:_MIN_PREFIX]
    found = []
    at = text.find(head)
    while at >= 0 and len(found) < 10_000:
        stop = at + _MIN_PREFIX
        while stop < len(text) and stop - at < len(form) and text[stop] == form[stop - at]:
            stop += 1
        found.append((at, stop))
        at = text.find(head, stop)
    return found


def load_config(path: str | os.PathLike[str], defaults: Defaults | None = None) -> Config:
    """Read and validate an endpoints file; raise ConfigError listing every problem."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError([f"{name}: cannot read the config file: {exc.strerror or exc}"]) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError([f"{name}: the config file is larger than {MAX_CONFIG_BYTES} bytes"])
    return parse_config(data, name, defaults or Defaults())


def parse_config(data: bytes, source: str, defaults: Defaults) -> Config:
    """Validate the bytes of an endpoints file (``source`` names it in messages)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{source}: the file is not UTF-8 (byte {exc.start})"]) from None
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        # The context mark points at the construct that went wrong ("while scanning a simple
        # key" on the line missing its colon); the problem mark is where the scanner gave up.
        mark = exc.context_mark or exc.problem_mark
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise ConfigError([f"{where}: invalid YAML: {exc.problem or exc}"]) from None
    except yaml.YAMLError as exc:  # e.g. a control character: one line, no parser context
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError([f"{source}: invalid YAML: {first}"]) from None
    except RecursionError:
        raise ConfigError([f"{source}: invalid YAML: nested too deeply"]) from None
    if root is None or yamlnodes.is_null(root):
        raise ConfigError([f"{source}: the file is empty; expected a list of endpoints"])
    if not isinstance(root, yaml.SequenceNode):
        raise ConfigError(
            [f"{source}:{yamlnodes.line(root)}: the top level must be a list of endpoints, "
             f"not {yamlnodes.kind(root)}"]
        )
    if not root.value:
        raise ConfigError([f"{source}:{yamlnodes.line(root)}: the list of endpoints is empty"])

    problems: list[str] = []
    endpoints: list[Endpoint] = []
    first_line: dict[str, int] = {}
    tls_checked: dict[tuple[str | None, str | None, str | None], str | None] = {}
    windows: dict[int, maintenance.Window | None] = {}  # anchored windows, compiled once
    for index, item in enumerate(root.value, start=1):
        builder = _EndpointBuilder(source, index, item, defaults, tls_checked)
        builder.windows = windows
        endpoint = builder.build()
        problems.extend(builder.problems)
        if endpoint is None:
            continue
        if endpoint.name in first_line:
            problems.append(
                f"{source}:{endpoint.line}: endpoint {endpoint.name!r}: duplicate name "
                f"(first used on line {first_line[endpoint.name]}); names must be unique"
            )
            continue
        first_line[endpoint.name] = endpoint.line
        endpoints.append(endpoint)
    if problems:
        raise ConfigError(problems)
    digest = hashlib.sha256(data).hexdigest()
    return Config(path=source, endpoints=tuple(endpoints), digest=digest)


class _EndpointBuilder:
    """Validates one list item, collecting problems instead of stopping at the first."""

    def __init__(
        self, source: str, index: int, node: yaml.Node, defaults: Defaults,
        tls_checked: dict[tuple[str | None, str | None, str | None], str | None],
    ) -> None:
        self.tls_checked = tls_checked  # TLS files already loaded in this parse: their verdict
        self.source = source
        self.index = index
        self.node = node
        self.defaults = defaults
        self.label = f"endpoint #{index}"
        self.problems: list[str] = []
        self.secrets: list[str] = []
        self.windows: dict[int, maintenance.Window | None] = {}

    def problem(self, node: yaml.Node, message: str) -> None:
        self.problems.append(f"{self.source}:{yamlnodes.line(node)}: {self.label}: {message}")

    def build(self) -> Endpoint | None:
        node = self.node
        if not isinstance(node, yaml.MappingNode):
            self.problem(node, f"expected a mapping with name and url, not {yamlnodes.kind(node)}")
            return None
        scan = yamlnodes.scan_keys(node)
        fields = {key: value_node for key, (_, value_node) in scan.entries.items()}
        bad_keys = [
            (
                bad.node,
                f"duplicate key {bad.key!r}"
                if bad.why is yamlnodes.Why.DUPLICATE
                else f"keys must be strings, not {yamlnodes.kind(bad.node)}",
            )
            for bad in scan.problems
        ]
        name = self._name(fields.get("name"))
        if name is not None:
            self.label = f"endpoint {name!r}"
        for key_node, message in bad_keys:  # reported after the name is known
            self.problem(key_node, message)
        unknown = [k for k in fields if k not in ALLOWED_KEYS]
        for key in unknown:
            self.problem(
                node,
                f"unknown key {yamlnodes.short(key)!r}; allowed keys: {', '.join(ALLOWED_KEYS)}",
            )
        if name is None and "name" not in fields:
            self.problem(node, "missing required key 'name'")
        url_node = fields.get("url")
        url = self._url(url_node) if url_node is not None else None
        if url_node is None:
            self.problem(node, "missing required key 'url'")
        method = self._method(fields.get("method"))
        headers = self._headers(fields.get("headers"))
        body = self._body(fields.get("body"))
        timeout = self._seconds(fields.get("timeout"), "timeout")
        threshold = self._seconds(fields.get("latency_threshold"), "latency_threshold")
        follow = self._bool(fields.get("follow_redirects"), "follow_redirects", True)
        verify = self._bool(fields.get("verify_tls"), "verify_tls", True)
        http2 = self._bool(fields.get("http2"), "http2", False)
        keep_headers = self._bool(
            fields.get("redirect_keep_headers"), "redirect_keep_headers", False,
        )
        proxy = self._proxy(fields.get("proxy"))
        tls = self._tls(fields.get("tls"))
        ip_family = self._ip_family(fields.get("ip_family"))
        expect_node = fields.get("expect")
        expect = checks.compile_expect(expect_node, self.problem) if expect_node else None
        windows_node = fields.get("maintenance")
        windows = (
            maintenance.compile_windows(windows_node, self.problem, self.windows)
            if windows_node else None
        )
        if url is not None and ip_family != "any":
            self._check_family(fields["ip_family"], url[1], ip_family)
        if timeout is not None and timeout >= self.defaults.interval:
            self.problem(
                fields["timeout"],
                f"timeout {timeout:g}s must be shorter than the probe interval "
                f"({self.defaults.interval:g}s)",
            )
        if self.problems or name is None or url is None:
            return None
        raw_url, target = url
        if target.password:
            # httpx sends URL credentials as basic auth, percent-decoded: each form they can
            # take on the wire or in an echo is a secret.
            self.secrets += [target.password, unquote(target.password)]
            credentials = f"{target.username}:{target.password}"
            self.secrets.append(base64.b64encode(credentials.encode()).decode("ascii"))
        return Endpoint(
            name=name,
            url=without_userinfo(target),
            display_url=_safe_url(str(fields["url"].value).strip()),
            domain=domain_of(raw_url),
            method=method,
            headers=headers,
            body=body,
            timeout=timeout if timeout is not None else self.defaults.timeout,
            latency_threshold=(
                threshold if threshold is not None else self.defaults.latency_threshold
            ),
            follow_redirects=follow,
            verify_tls=verify,
            line=yamlnodes.line(node),
            request=target,
            secrets=tuple(sorted(set(self.secrets), key=len, reverse=True)),
            http2=http2,
            proxy=proxy,
            tls=tls,
            ip_family=ip_family,
            expect=expect,
            maintenance=windows,
            redirect_keep_headers=keep_headers,
        )

    def _scalar_text(self, node: yaml.Node, what: str) -> str | None:
        """A scalar as the text written in the file (numbers and booleans become strings)."""
        if not isinstance(node, yaml.ScalarNode) or node.tag == yamlnodes.NULL_TAG:
            self.problem(node, f"{what} must be a string, not {yamlnodes.kind(node)}")
            return None
        return str(node.value)

    def _name(self, node: yaml.Node | None) -> str | None:
        if node is None:
            return None
        text = self._scalar_text(node, "name")
        if text is None:
            return None
        if not text.strip():
            self.problem(node, "name must not be empty")
            return None
        if any(ch in text for ch in "\r\n\x00"):
            self.problem(node, "name must be one line of text")
            return None
        return text

    def _expand(self, node: yaml.Node, text: str, what: str) -> str | None:
        """Replace ${VAR} from the environment; the values become secrets to redact."""
        missing: list[str] = []

        def sub(match: re.Match[str]) -> str:
            var = match.group(1)
            if not _ENV_NAME.match(var):
                missing.append(f"invalid variable name {var!r}")
                return ""
            value = os.environ.get(var)
            if value is None:
                missing.append(f"environment variable {var} is not set")
                return ""
            self.secrets.append(value)
            return value

        expanded = _ENV_REF.sub(sub, text)
        for message in missing:
            self.problem(node, f"{what}: {message}")
        return None if missing else expanded

    def _url(self, node: yaml.Node) -> tuple[str, httpx.URL] | None:
        text = self._scalar_text(node, "url")
        if text is None:
            return None
        expanded = self._expand(node, text.strip(), "url")
        if expanded is None:
            return None
        try:
            scheme = urlsplit(expanded).scheme.lower()
        except ValueError as exc:  # urlsplit rejects e.g. an unclosed "[" IPv6 host
            self.problem(node, f"url {yamlnodes.short(_safe_url(text))!r} is invalid: {exc}")
            return None
        if scheme not in ("http", "https"):
            self.problem(
                node,
                "url must start with http:// or https://, "
                f"not {yamlnodes.short(_safe_url(text))!r}",
            )
            return None
        try:
            return expanded, parse_url(expanded)
        except (ValueError, httpx.InvalidURL) as exc:
            # The parser's message quotes the expanded text (httpx: "Invalid port: '1x'"), and
            # a ${VAR} value can be as short as one character, too short to redact reliably
            # from free text.  So it is shown only when the URL had no ${VAR}; otherwise the
            # URL as written (references unexpanded) must do to find the mistake.
            shown = yamlnodes.short(_safe_url(text))
            if expanded == text.strip():
                message = f"is invalid: {redact(str(exc), self.secrets)}"
            else:
                message = ("is invalid once its ${VAR} references are expanded (the parser's "
                           "message is not shown: it would quote their values)")
            self.problem(node, f"url {shown!r} {message}")
            return None

    def _proxy(self, node: yaml.Node | None) -> str | None:
        """An http(s) proxy URL; ${VAR} expands, and its credentials are secrets."""
        if node is None or yamlnodes.is_null(node):
            return None
        text = self._scalar_text(node, "proxy")
        if text is None:
            return None
        expanded = self._expand(node, text.strip(), "proxy")
        if expanded is None:
            return None
        shown = yamlnodes.short(_safe_url(text))
        try:
            proxy = httpx.URL(expanded)
        except (httpx.InvalidURL, ValueError):
            self.problem(node, f"proxy {shown!r} is not a valid URL")
            return None
        if proxy.scheme not in ("http", "https") or not proxy.raw_host:
            self.problem(node, f"proxy must be an http:// or https:// URL with a host, "
                               f"not {shown!r}")
            return None
        if proxy.password:
            self.secrets += [proxy.password, unquote(proxy.password)]
        return expanded

    def _tls(self, node: yaml.Node | None) -> TlsOptions | None:
        """The ``tls`` mapping; its files are loaded once here, so a bad one is a config
        error now instead of a probe failure blamed on the endpoint later."""
        if node is None or yamlnodes.is_null(node):
            return None
        if not isinstance(node, yaml.MappingNode):
            self.problem(node, f"tls must be a mapping with {', '.join(TLS_KEYS)}, "
                               f"not {yamlnodes.kind(node)}")
            return None
        values: dict[str, str] = {}
        fields, _ = yamlnodes.nested_fields(node, TLS_KEYS, "tls", self.problem)
        for key, value_node in fields.items():
            text = self._scalar_text(value_node, f"tls.{key}")
            if text is not None and not text.strip():
                self.problem(value_node, f"tls.{key} must not be empty")
            elif text is not None:
                values[key] = text.strip()
        options = TlsOptions(**values)
        if options.key_file is not None and options.cert_file is None:
            self.problem(node, "tls.key_file needs tls.cert_file")
            return None
        files = (options.ca_file, options.cert_file, options.key_file)
        if files not in self.tls_checked:
            self.tls_checked[files] = _tls_files_problem(*files)
        problem = self.tls_checked[files]
        if problem is not None:
            self.problem(node, f"tls: {problem}")
            return None
        return options

    def _ip_family(self, node: yaml.Node | None) -> str:
        if node is None:
            return "any"
        text = self._scalar_text(node, "ip_family")
        if text is None:
            return "any"
        if text not in IP_FAMILIES:
            self.problem(node, f"ip_family must be one of {', '.join(IP_FAMILIES)}, "
                               f"not {yamlnodes.short(text)!r}")
            return "any"
        return text

    def _check_family(self, node: yaml.Node, url: httpx.URL, family: str) -> None:
        """An IP literal of the other family can never be reached: say so now."""
        try:
            address = ipaddress.ip_address(url.raw_host.decode("ascii"))
        except ValueError:
            return  # a name: its addresses of this family are looked up at each probe
        if f"ipv{address.version}" != family:
            self.problem(node, f"ip_family {family} cannot reach the IPv{address.version} "
                               f"address {address}")

    def _method(self, node: yaml.Node | None) -> str:
        if node is None:
            return "GET"
        text = self._scalar_text(node, "method")
        if text is None:
            return "GET"
        if not _TOKEN.match(text):
            self.problem(node, f"method {yamlnodes.short(text)!r} is not a valid HTTP method token")
            return "GET"
        return text.upper()

    def _headers(self, node: yaml.Node | None) -> tuple[tuple[str, str], ...]:
        if node is None or yamlnodes.is_null(node):
            return ()
        if not isinstance(node, yaml.MappingNode):
            self.problem(
                node, f"headers must be a mapping of name to value, not {yamlnodes.kind(node)}"
            )
            return ()
        headers: list[tuple[str, str]] = []
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = self._scalar_text(key_node, "a header name")
            if key is None:
                continue
            if not _TOKEN.match(key):
                self.problem(key_node, f"header name {yamlnodes.short(key)!r} is not a valid token")
                continue
            if key.lower() in seen:
                self.problem(key_node, f"duplicate header {key!r}")
                continue
            seen.add(key.lower())
            # The value is never echoed: headers carry credentials.
            value = self._scalar_text(value_node, f"the value of header {key!r}")
            if value is None:
                continue
            expanded = self._expand(value_node, value, f"header {key!r}")
            if expanded is None:
                continue
            if any(ch in expanded for ch in "\r\n\x00"):
                self.problem(value_node, f"the value of header {key!r} contains a line break")
                continue
            self.secrets.append(expanded)
            headers.append((key, expanded))
        return tuple(headers)

    def _body(self, node: yaml.Node | None) -> bytes | None:
        if node is None:
            return None
        if not isinstance(node, yaml.ScalarNode) or node.tag == yamlnodes.NULL_TAG:
            self.problem(
                node,
                f"body must be a string (a JSON-encoded string such as '{{\"foo\":\"bar\"}}'), "
                f"not {yamlnodes.kind(node)}",
            )
            return None
        expanded = self._expand(node, str(node.value), "body")
        return None if expanded is None else expanded.encode("utf-8")

    def _seconds(self, node: yaml.Node | None, what: str) -> float | None:
        if node is None:
            return None
        value = yamlnodes.number(node)
        if value is None:
            self.problem(node, f"{what} must be a number of seconds, not {yamlnodes.kind(node)}")
            return None
        try:
            seconds = float(value)
        except OverflowError:
            seconds = float("inf")
        if not 0 < seconds < float("inf"):
            shown = yamlnodes.short(str(node.value))
            self.problem(node, f"{what} must be greater than 0 seconds, not {shown}")
            return None
        return seconds

    def _bool(self, node: yaml.Node | None, what: str, default: bool) -> bool:
        if node is None:
            return default
        value = yamlnodes.boolean(node)
        if value is None:
            self.problem(node, f"{what} must be true or false, not {yamlnodes.kind(node)}")
            return default
        return value


def _safe_url(url: str) -> str:
    """The URL as written, with any password hidden (``${VAR}`` stays unexpanded).

    Done on the text, not through a URL parser, so a URL that fails to parse (a bad port,
    an unclosed ``[``, no scheme at all) is masked too: the authority runs from after
    ``scheme://`` (or from the start) to the first ``/``, ``?`` or ``#``; the userinfo is what
    precedes its last ``@``; the password is what follows the userinfo's first ``:``.
    """
    begin = url.find("://")
    begin = 0 if begin < 0 else begin + 3
    end = len(url)
    for stop in "/?#":
        found = url.find(stop, begin)
        if 0 <= found < end:
            end = found
    at = url.rfind("@", begin, end)
    colon = url.find(":", begin, at)
    if at < 0 or colon < 0 or colon + 1 == at:
        return url
    return f"{url[:colon + 1]}xxxxx{url[at:]}"



def _tls_files_problem(
    ca_file: str | None, cert_file: str | None, key_file: str | None,
) -> str | None:
    """Why these TLS files cannot be used (missing, unreadable, not PEM, key not matching
    the certificate), or None when they load."""
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError, ValueError) as exc:  # ValueError: a NUL in the path
        return f"ca_file {ca_file!r} cannot be loaded: {getattr(exc, 'strerror', None) or exc}"
    if cert_file is not None:
        try:
            context.load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError, ValueError) as exc:
            what = f"cert_file {cert_file!r}" + (f" with key_file {key_file!r}" if key_file else "")
            return f"{what} cannot be loaded: {getattr(exc, 'strerror', None) or exc}"
    return None
