"""The differential test's case table: one scripted raw answer per case, and what it means.

Each `Case` is served at ``/case/<name>`` on the listener it names. ``expect`` is the verdict
a client that follows RFC 9110/9112 reaches ("up" = a complete response with a final 2xx
status after at most 10 redirects, within the timeout); the test checks it against what curl
and httpx conclude, so a case that does not do what its name says is caught too.

Answers ending in `Then.KEEP` leave the connection open after the response: only the
response's own framing (Content-Length, chunked, HEAD, 204/304, 1xx) can end such a probe
in time; a client that read until close would time out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tests.differential.server import Answer, Request, Route, Then

Verdict = Literal["up", "down"]
Listener = Literal["plain", "good", "self-signed", "expired", "wrong-host", "drop"]

MIB = 1024 * 1024


@dataclass(frozen=True)
class Case:
    name: str
    answer: Answer
    expect: Verdict
    about: str
    method: str = "GET"
    body: bytes | None = None
    listener: Listener = "plain"
    tls: bool = False  # only for the "drop" listener, which serves both schemes

    @property
    def path(self) -> str:
        return f"/case/{self.name}"


def head(status: bytes, *fields: bytes) -> bytes:
    """A response head with CRLF line ends."""
    return status + b"\r\n" + b"".join(field + b"\r\n" for field in fields) + b"\r\n"


OK = b"HTTP/1.1 200 OK"


def close(*pieces: bytes) -> Answer:
    return Answer(pieces, Then.CLOSE)


def keep(*pieces: bytes) -> Answer:
    return Answer(pieces, Then.KEEP)


def stall(*pieces: bytes) -> Answer:
    return Answer(pieces, Then.STALL)


def cl(body: bytes, *fields: bytes, status: bytes = OK) -> bytes:
    """A complete Content-Length response."""
    return head(status, b"Content-Length: %d" % len(body), *fields) + body


def chunked(*raw: bytes, status: bytes = OK) -> bytes:
    """A chunked response whose body is ``raw`` verbatim (chunk framing written by hand)."""
    return head(status, b"Transfer-Encoding: chunked") + b"".join(raw)


def redirect(code: int, location: bytes) -> Answer:
    return keep(head(b"HTTP/1.1 %d Redirect" % code, b"Location: " + location,
                     b"Content-Length: 0"))


BIG = b"x" * (MIB + MIB // 2)  # 1.5 MiB
LONG_VALUE = b"v" * (80 * 1024)
# 150 KiB and 400 KiB header blocks made of 1 KiB fields: over the 100 KiB head limit of
# the exporter and of httpx's h11 (httpcore's setting), under (150) and over (400) curl's
# 300 KiB total.
FIELDS_150K = tuple(b"X-F%d: " % i + b"f" * 1000 for i in range(150))
FIELDS_400K = tuple(b"X-F%d: " % i + b"f" * 1000 for i in range(400))
MANY_SMALL = tuple(b"X-%d: v" % i for i in range(3000))  # ~30 KiB: many fields, small head
TINY_CHUNKS = b"1\r\nx\r\n" * 20000 + b"0\r\n\r\n"


CASES: tuple[Case, ...] = (
    # -- Content-Length (RFC 9112 6.3) --
    Case("cl-exact", close(cl(b"hello")), "up", "Content-Length body, then close"),
    Case("cl-exact-keep-open", keep(cl(b"hello")), "up", "Content-Length ends it; no close"),
    Case("cl-zero-keep-open", keep(cl(b"")), "up", "Content-Length: 0, connection kept"),
    Case("cl-short-then-close", close(head(OK, b"Content-Length: 100") + b"x" * 10), "down",
         "10 of 100 declared bytes, then close: incomplete (RFC 9112 8)"),
    Case("cl-short-then-stall", stall(head(OK, b"Content-Length: 100") + b"x" * 10), "down",
         "10 of 100 declared bytes, then nothing: timeout"),
    Case("cl-10mib-cut-at-1.5mib", close(head(OK, b"Content-Length: 10485760"), BIG), "down",
         "10 MiB declared, 1.5 MiB sent, close"),
    Case("cl-10mib-stall-at-1.5mib", stall(head(OK, b"Content-Length: 10485760"), BIG), "down",
         "10 MiB declared, 1.5 MiB sent, then nothing"),
    Case("cl-1.5mib-complete", keep(head(OK, b"Content-Length: %d" % len(BIG)), BIG), "up",
         "a complete body over 1 MiB"),
    Case("cl-excess-bytes", close(head(OK, b"Content-Length: 5") + b"hello world"), "up",
         "bytes after the declared body are not part of this response"),
    Case("cl-duplicate-same", keep(head(OK, b"Content-Length: 5", b"Content-Length: 5")
                                   + b"hello"), "up",
         "the same Content-Length twice may be taken as one (RFC 9110 8.6)"),
    Case("cl-list-same", keep(head(OK, b"Content-Length: 5, 5") + b"hello"), "up",
         "a list of identical values may be taken as one (RFC 9110 8.6)"),
    Case("cl-conflicting", close(head(OK, b"Content-Length: 5", b"Content-Length: 6")
                                 + b"hello!"), "down",
         "two different Content-Length values: unrecoverable framing error (RFC 9112 6.3)"),
    Case("cl-plus-sign", close(head(OK, b"Content-Length: +5") + b"hello"), "down",
         "Content-Length is 1*DIGIT, no sign (RFC 9110 8.6)"),
    Case("cl-too-big", close(head(OK, b"Content-Length: 99999999999999999999999") + b"hello"),
         "down", "a Content-Length no implementation can hold (RFC 9112 6.3)"),
    Case("cl-negative", close(head(OK, b"Content-Length: -1") + b"hello"), "down",
         "Content-Length is 1*DIGIT (RFC 9110 8.6)"),
    Case("cl-not-a-number", close(head(OK, b"Content-Length: five") + b"hello"), "down",
         "Content-Length is 1*DIGIT (RFC 9110 8.6)"),
    # -- chunked (RFC 9112 7.1) --
    Case("chunked-plain", keep(chunked(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")), "up",
         "two chunks and the last-chunk"),
    Case("chunked-extensions", keep(chunked(b"5;name=value;x\r\nhello\r\n0;end\r\n\r\n")), "up",
         "chunk extensions are ignored (RFC 9112 7.1.1)"),
    Case("chunked-trailers", keep(chunked(b"5\r\nhello\r\n0\r\nX-Trailer: t\r\nX-Two: 2\r\n\r\n")),
         "up", "trailer fields after the last chunk (RFC 9112 7.1.2)"),
    Case("chunked-upper-hex", keep(chunked(b"A\r\n0123456789\r\n0\r\n\r\n")), "up",
         "chunk-size in upper-case hex"),
    Case("chunked-lower-hex", keep(chunked(b"a\r\n0123456789\r\n0\r\n\r\n")), "up",
         "chunk-size in lower-case hex"),
    Case("chunked-leading-zeros", keep(chunked(b"0005\r\nhello\r\n000\r\n\r\n")), "up",
         "chunk-size with leading zeros is still 1*HEXDIG"),
    Case("chunked-many-tiny", keep(chunked(TINY_CHUNKS)), "up", "20,000 one-byte chunks"),
    Case("chunked-no-last-chunk-close", close(chunked(b"5\r\nhello\r\n")), "down",
         "no last-chunk before close: incomplete (RFC 9112 8)"),
    Case("chunked-no-last-chunk-stall", stall(chunked(b"5\r\nhello\r\n")), "down",
         "no last-chunk and no close: timeout"),
    Case("chunked-bad-size", close(chunked(b"zz\r\nhello\r\n0\r\n\r\n")), "down",
         "chunk-size is not hex"),
    Case("chunked-underscore-size", close(chunked(b"1_0\r\n0123456789abcdef\r\n0\r\n\r\n")),
         "down", "'1_0' is not 1*HEXDIG (Python's int() would take it)"),
    Case("chunked-no-crlf-after-data", close(chunked(b"5\r\nhelloXX0\r\n\r\n")), "down",
         "chunk-data not followed by CRLF"),
    Case("chunked-size-overflow", close(chunked(b"fffffffffffffffffffff\r\nhello\r\n")), "down",
         "a chunk-size no implementation can hold"),
    Case("chunked-bare-lf", keep(chunked(b"5\nhello\n0\n\n")), "up",
         "LF line ends in chunk framing: a recipient MAY accept them (RFC 9112 2.2)"),
    Case("chunked-and-content-length",
         keep(head(OK, b"Transfer-Encoding: chunked", b"Content-Length: 100")
              + b"5\r\nhello\r\n0\r\n\r\n"), "up",
         "Transfer-Encoding overrides Content-Length (RFC 9112 6.3)"),
    # -- read until close (RFC 9112 6.3 item 8) --
    Case("close-delimited", close(head(OK) + b"body until close"), "up",
         "no Content-Length, no chunked: the body ends at close"),
    Case("close-delimited-empty", close(head(OK)), "up", "close-delimited, empty body"),
    Case("te-not-chunked", close(head(OK, b"Transfer-Encoding: identity") + b"until close"),
         "up", "a final coding other than chunked: read until close (RFC 9112 6.3)"),
    Case("close-delimited-stall", stall(head(OK) + b"partial"), "down",
         "close-delimited body never closed: timeout"),
    # -- HTTP/1.0 --
    Case("http10-close", close(head(b"HTTP/1.0 200 OK") + b"old school"), "up",
         "HTTP/1.0 response, body until close"),
    Case("http10-keep-alive", keep(cl(b"hello", b"Connection: keep-alive",
                                      status=b"HTTP/1.0 200 OK")), "up",
         "HTTP/1.0 keep-alive with Content-Length"),
    Case("http09-body-only", close(b"just a body, no status line\n"), "down",
         "no status line (HTTP/0.9 is not HTTP/1.1; RFC 9112 2.2)"),
    # -- 1xx interim responses (RFC 9110 15.2) --
    Case("100-then-200", keep(head(b"HTTP/1.1 100 Continue") + cl(b"ok")), "up",
         "100 Continue, then the final 200"),
    Case("103-then-200", keep(head(b"HTTP/1.1 103 Early Hints", b"Link: </s.css>; rel=preload")
                              + cl(b"ok")), "up", "103 Early Hints, then 200"),
    Case("two-1xx-then-200", keep(head(b"HTTP/1.1 100 Continue")
                                  + head(b"HTTP/1.1 103 Early Hints") + cl(b"ok")), "up",
         "two interim responses, then 200"),
    Case("199-then-200", keep(head(b"HTTP/1.1 199 Whatever") + cl(b"ok")), "up",
         "199 is an (unregistered) interim code, then 200"),
    Case("100-with-content-length", keep(head(b"HTTP/1.1 100 Continue", b"Content-Length: 5")
                                         + cl(b"ok")), "up",
         "a 1xx response never has a body, whatever Content-Length says (RFC 9112 6.3)"),
    Case("100-then-close", close(head(b"HTTP/1.1 100 Continue")), "down",
         "an interim response and no final one"),
    # -- HEAD, 204, 304 (RFC 9112 6.3 items 1-2) --
    Case("head-content-length", keep(head(OK, b"Content-Length: 1000")), "up",
         "HEAD: Content-Length but no body", method="HEAD"),
    Case("head-chunked", keep(head(OK, b"Transfer-Encoding: chunked")), "up",
         "HEAD: chunked but no body", method="HEAD"),
    Case("head-with-body-anyway", close(cl(b"hello")), "up",
         "HEAD answered with body bytes: they are not part of the response", method="HEAD"),
    Case("204-keep-open", keep(head(b"HTTP/1.1 204 No Content")), "up", "204, no body"),
    Case("204-content-length", keep(head(b"HTTP/1.1 204 No Content", b"Content-Length: 10")),
         "up", "204 never has a body, whatever Content-Length says"),
    Case("204-chunked", keep(head(b"HTTP/1.1 204 No Content", b"Transfer-Encoding: chunked")),
         "up", "204 never has a body, whatever Transfer-Encoding says"),
    Case("304-content-length", keep(head(b"HTTP/1.1 304 Not Modified", b"Content-Length: 10")),
         "down", "304 has no body; not 2xx"),
    # -- field syntax (RFC 9112 5) --
    Case("obs-fold", keep(cl(b"ok", b"X-Folded: one", b"  two")), "up",
         "obs-fold: a user agent replaces it with SP (RFC 9112 5.2)"),
    Case("bare-lf", keep(b"HTTP/1.1 200 OK\nContent-Length: 2\nX-A: b\n\nok"), "up",
         "LF line ends: a recipient MAY accept them (RFC 9112 2.2)"),
    Case("space-before-colon", keep(head(OK, b"Content-Length : 2") + b"ok"), "down",
         "whitespace between field name and colon is invalid (RFC 9112 5.1)"),
    Case("nul-in-field-value", keep(cl(b"ok", b"X-A: a\x00b")), "down",
         "NUL in a field value: reject or replace with SP (RFC 9110 5.5)"),
    Case("obs-text-field-value", keep(cl(b"ok", b"X-A: caf\xc3\xa9")), "up",
         "obs-text bytes in a field value are allowed (RFC 9110 5.5)"),
    Case("header-without-colon", keep(head(OK, b"NoColonHere", b"Content-Length: 2") + b"ok"),
         "down", "a field line without a colon is invalid (RFC 9112 5)"),
    Case("head-80kib-field", keep(cl(b"ok", b"X-Long: " + LONG_VALUE)), "up",
         "one 80 KiB field: under every limit"),
    Case("head-150kib", keep(cl(b"ok", *FIELDS_150K)), "down",
         "a 150 KiB header block"),
    Case("head-400kib", close(cl(b"ok", *FIELDS_400K)), "down",
         "a 400 KiB header block: over every client's limit"),
    Case("many-small-fields", keep(cl(b"ok", *MANY_SMALL)), "up", "3,000 small fields"),
    # -- status lines (RFC 9112 4) --
    Case("status-no-reason", keep(b"HTTP/1.1 200 \r\nContent-Length: 2\r\n\r\nok"), "up",
         "empty reason-phrase"),
    Case("status-no-reason-no-space", keep(b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok"), "up",
         "no SP after the code: a client SHOULD be lenient (RFC 9112 4)"),
    Case("status-http12", keep(cl(b"ok", status=b"HTTP/1.2 200 OK")), "up",
         "a higher minor version is processed as 1.1 (RFC 9110 2.5)"),
    Case("status-2000", close(cl(b"ok", status=b"HTTP/1.1 2000 OK")), "down",
         "status-code is 3DIGIT"),
    Case("status-20", close(cl(b"ok", status=b"HTTP/1.1 20 OK")), "down",
         "status-code is 3DIGIT"),
    Case("status-http2", close(cl(b"ok", status=b"HTTP/2 200")), "down",
         "'HTTP/2' is not an HTTP/1.x status line"),
    Case("status-icy", close(cl(b"ok", status=b"ICY 200 OK")), "down",
         "SHOUTcast 'ICY' is not HTTP-version"),
    Case("status-lowercase-http", close(cl(b"ok", status=b"http/1.1 200 OK")), "down",
         "HTTP-name is case-sensitive (RFC 9112 2.3)"),
    Case("status-garbage", close(b"SSH-2.0-OpenSSH_9.0\r\n\x00\xff\xfe garbage\r\n\r\n"),
         "down", "not HTTP at all"),
    Case("empty-answer", close(), "down", "request read, connection closed, no byte sent"),
    Case("close-on-accept", close(), "down", "closed before reading anything",
         listener="drop"),
    Case("status-199-final", close(head(b"HTTP/1.1 199 Whatever", b"Content-Length: 0")), "down",
         "a 1xx and then close: no final response"),
    Case("status-200", keep(cl(b"", status=b"HTTP/1.1 200 OK")), "up", "200"),
    Case("status-299", keep(cl(b"", status=b"HTTP/1.1 299 Odd")), "up", "299 is 2xx"),
    Case("status-300", keep(cl(b"", status=b"HTTP/1.1 300 Multiple Choices")), "down",
         "300 without Location: final, not 2xx"),
    Case("status-404", keep(cl(b"", status=b"HTTP/1.1 404 Not Found")), "down", "404"),
    Case("status-500", keep(cl(b"", status=b"HTTP/1.1 500 Oops")), "down", "500"),
    Case("status-599", keep(cl(b"", status=b"HTTP/1.1 599 Odd")), "down", "599"),
    # -- redirects (RFC 9110 15.4) --
    Case("redirect-relative", redirect(302, b"/ok"), "up", "relative Location"),
    Case("redirect-dot-segments", redirect(302, b"../case/../ok"), "up",
         "relative reference with dot segments (RFC 3986 5.2)"),
    Case("redirect-absolute", redirect(302, b"http://127.0.0.1:@PORT@/ok"), "up",
         "absolute Location"),
    Case("redirect-protocol-relative", redirect(302, b"//127.0.0.1:@PORT@/ok"), "up",
         "network-path reference '//host:port/path'"),
    Case("redirect-utf8", redirect(302, b"/caf\xc3\xa9"), "up",
         "raw UTF-8 in Location: follow the percent-encoded path /caf%C3%A9"),
    Case("redirect-301", redirect(301, b"/ok"), "up", "301"),
    Case("redirect-303", redirect(303, b"/ok"), "up", "303"),
    Case("redirect-307", redirect(307, b"/ok"), "up", "307"),
    Case("redirect-308", redirect(308, b"/ok"), "up", "308"),
    Case("redirect-303-after-post", redirect(303, b"/must-be-get"), "up",
         "303 after POST continues as GET (RFC 9110 15.4.4)", method="POST", body=b"x=1"),
    Case("redirect-301-after-post", redirect(301, b"/must-be-get"), "up",
         "301 after POST continues as GET, as user agents do (RFC 9110 15.4.2)",
         method="POST", body=b"x=1"),
    Case("redirect-307-keeps-post", redirect(307, b"/must-be-post"), "up",
         "307 repeats the POST and its body (RFC 9110 15.4.8)", method="POST", body=b"x=1"),
    Case("redirect-loop", redirect(302, b"/case/redirect-loop"), "down", "a redirect to itself"),
    Case("redirect-10-hops", redirect(302, b"/hops/9"), "up", "exactly 10 redirects"),
    Case("redirect-11-hops", redirect(302, b"/hops/10"), "down", "11 redirects: one too many"),
    Case("redirect-no-location", keep(head(b"HTTP/1.1 302 Found", b"Content-Length: 0")), "down",
         "302 without Location is the final response"),
    Case("redirect-space", redirect(302, b"/o k"), "up",
         "a space in Location: follow the percent-encoded path /o%20k"),
    Case("redirect-empty-location", redirect(302, b""), "down",
         "an empty Location is not a usable target"),
    Case("redirect-to-self-signed", redirect(302, b"https://127.0.0.1:@SELF@/ok"), "down",
         "redirect to an untrusted certificate"),
    Case("redirect-to-https", redirect(302, b"https://127.0.0.1:@GOOD@/ok"), "up",
         "http to https with a trusted certificate"),
    Case("redirect-to-closed", redirect(302, b"http://127.0.0.1:@DROP@/ok"), "down",
         "redirect to a server that closes on accept"),
    # -- TLS --
    Case("tls-good", keep(cl(b"ok")), "up", "certificate from the trusted test CA",
         listener="good"),
    Case("tls-good-chunked", keep(chunked(b"2\r\nok\r\n0\r\n\r\n")), "up", "chunked over TLS",
         listener="good"),
    Case("tls-good-cl-short", close(head(OK, b"Content-Length: 100") + b"short"), "down",
         "truncated body over TLS", listener="good"),
    Case("tls-close-delimited", close(head(OK) + b"until close"), "up",
         "read-until-close over TLS, ended by close_notify", listener="good"),
    Case("tls-self-signed", keep(cl(b"ok")), "down", "self-signed leaf",
         listener="self-signed"),
    Case("tls-expired", keep(cl(b"ok")), "down", "expired leaf", listener="expired"),
    Case("tls-wrong-host", keep(cl(b"ok")), "down", "leaf for wrong.example only",
         listener="wrong-host"),
    Case("tls-close-on-accept", close(), "down", "https server closes right after accept",
         listener="drop", tls=True),
)


def _fixed(answer: Answer) -> Route:
    return lambda _request: answer


def _hops(n: int) -> Route:
    """``/hops/n`` is n redirects away from a 200 (``/hops/0`` answers 200 itself)."""
    return _fixed(keep(cl(b"ok")) if n == 0 else redirect(302, b"/hops/%d" % (n - 1)))


def _must_be(method: str) -> Route:
    """200 only for ``method`` (and, for POST, the body the case sent), else 405."""

    def route(request: Request) -> Answer:
        good = request.method == method and (method != "POST" or request.body == b"x=1")
        if method == "GET":
            good = good and not request.body
        status = b"HTTP/1.1 200 OK" if good else b"HTTP/1.1 405 Wrong Method"
        return keep(cl(request.method.encode(), status=status))

    return route


def routes() -> dict[str, Route]:
    """Every path the server answers: the cases, and the targets their redirects lead to."""
    table: dict[str, Route] = {case.path: _fixed(case.answer) for case in CASES}
    table["/ok"] = _fixed(keep(cl(b"ok")))
    table["/caf%C3%A9"] = table["/caf%c3%a9"] = _fixed(keep(cl(b"cafe")))
    table["/o%20k"] = _fixed(keep(cl(b"ok")))
    table["/must-be-get"] = _must_be("GET")
    table["/must-be-post"] = _must_be("POST")
    table.update({f"/hops/{n}": _hops(n) for n in range(11)})
    return table
