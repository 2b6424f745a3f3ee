"""Probe failures in plain words: what an SRE reads first, with the technical text kept beside it.

A probe's ``error`` is the most telling exception text (``probe.describe``), for example
``SSLCertVerificationError: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed:
self-signed certificate (_ssl.c:1006)``.  :func:`explain` turns a result's reason and that
text into one short sentence ("certificate not trusted (self-signed)") and keeps the original
as the second line.  Matching is on stable fragments of OpenSSL's, the resolver's and the
kernel's messages, most specific first; a text nothing matches still gets its reason's
general sentence, so every reason reads in words.

It also says which timing phases a result went through (:func:`phases_seen`): a phase that
never started (tls on plain HTTP; request and wait after a failed handshake; connect on a
reused connection) is exactly 0.0, and the pages show it as a dash, not "0.0 ms".
"""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus

from availability_exporter.model import ProbeResult

# (fragment of the error text, lower-cased) -> the sentence; first match wins, so the longer,
# more specific fragments come first within each reason.
_BY_REASON: dict[str, tuple[tuple[tuple[str, ...], str], ...]] = {
    "tls": (
        (("self-signed certificate in certificate chain",
          "self signed certificate in certificate chain"),
         "certificate not trusted (self-signed CA in the chain)"),
        (("self-signed certificate", "self signed certificate"),
         "certificate not trusted (self-signed)"),
        (("certificate has expired",), "certificate expired"),
        (("certificate is not yet valid",), "certificate not valid yet"),
        (("hostname mismatch", "ip address mismatch", "doesn't match", "not valid for"),
         "certificate is for another host name (wrong host)"),
        (("unable to get local issuer certificate", "unable to get issuer certificate",
          "unable to verify the first certificate", "unknown ca"),
         "certificate not trusted (unknown certificate authority)"),
        (("certificate revoked",), "certificate revoked"),
        (("certificate required",), "the server requires a client certificate"),
        (("wrong_version_number", "wrong version number", "http_request", "record layer failure"),
         "TLS handshake failed: the port does not speak TLS (plain HTTP?)"),
        (("unsupported_protocol", "unsupported protocol", "protocol version",
          "no protocols available"),
         "TLS handshake failed: no TLS version in common"),
        (("handshake_failure", "handshake failure", "no_shared_cipher", "no shared cipher"),
         "TLS handshake refused by the server"),
        (("eof occurred", "unexpected_eof", "unexpected eof"),
         "connection closed during the TLS handshake"),
    ),
    "connect": (
        (("refused", "errno 111"), "connection refused (nothing listens on that port)"),
        (("unreachable", "no route to host", "errno 101", "errno 113"),
         "host unreachable (no network route)"),
        (("reset", "errno 104"), "connection reset while connecting"),
        (("proxy",), "could not connect through the proxy"),
    ),
    "dns": (
        (("temporary failure", "eai_again", "errno -3"),
         "DNS lookup failed for now (resolver unreachable or timed out)"),
        (("no address associated", "addrfamily", "errno -5", "errno -9", "no address for"),
         "host name has no address of the requested IP family"),
        (("name or service not known", "nodename nor servname", "noname", "errno -2",
          "errno 8"),
         "host name not found (DNS)"),
    ),
    "protocol": (
        (("reset", "errno 104"), "connection reset before a complete response"),
        (("header block larger", "too large", "too long"), "response headers too large"),
        (("not an http status line", "unsupported http version", "invalid character",
          "malformed header"),
         "not a valid HTTP response"),
        (("content-length", "chunk", "before the end of"),
         "response body cut short or badly framed"),
        (("closed", "disconnected", "eof"),
         "server closed the connection before a complete response"),
    ),
    "redirects": (
        (("more than",), "too many redirects"),
        (("location",), "redirect to a location that cannot be followed"),
    ),
}

# The sentence for a reason when no fragment matches (and for reasons without texts).
_GENERAL: dict[str, str] = {
    "tls": "TLS handshake or certificate check failed",
    "connect": "could not connect",
    "dns": "DNS lookup failed",
    "protocol": "not a valid HTTP response",
    "redirects": "redirect could not be followed",
    "timeout": "no complete response in time (timeout)",
    "slow": "answered, but slower than the latency threshold",
    "status": "the server answered with an error status",
    "content": "the response failed a configured check",
    "exporter": "the exporter could not probe (its own trouble, not counted against the endpoint)",
}


@dataclass(frozen=True, slots=True)
class Explanation:
    """A failure in words (``summary``) and the technical text it came from (``detail``)."""

    summary: str
    detail: str | None


def explain(result: ProbeResult) -> Explanation | None:
    """The plain-language reading of a result; None for an up result."""
    reason = result.reason
    if reason is None:
        return None
    detail = result.error
    if reason == "status":
        code = result.status_code
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = ""
        words = f"the server answered {code} {phrase}".rstrip()
        # Our own "HTTP status 500" says nothing more than the sentence.
        return Explanation(words, None if detail == f"HTTP status {code}" else detail)
    text = (detail or "").lower()
    for fragments, sentence in _BY_REASON.get(reason, ()):
        if any(fragment in text for fragment in fragments):
            return Explanation(sentence, detail)
    return Explanation(_GENERAL.get(reason, reason), detail)


def phases_seen(result: ProbeResult) -> tuple[bool, ...]:
    """For each phase (model.PHASES order), whether the probe went through it.

    A phase is timed from its start event to the next one, so one that began always lasts
    some nanoseconds; exactly 0.0 means it never started.
    """
    return tuple(value > 0.0 for value in result.phases)
