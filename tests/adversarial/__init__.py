"""A misbehaving HTTP(S) target server and test certificates, for tests and benchmarks."""

from .certs import CertKind, CertSet, IssuedCert, make_certs
from .server import (
    UNRESOLVABLE_HOST,
    AdversarialServer,
    Request,
    RequestLog,
    ServerStats,
    refused_port,
    serve_in_thread,
)

__all__ = [
    "UNRESOLVABLE_HOST",
    "AdversarialServer",
    "CertKind",
    "CertSet",
    "IssuedCert",
    "Request",
    "RequestLog",
    "ServerStats",
    "make_certs",
    "refused_port",
    "serve_in_thread",
]
