"""exporter-toolkit's ``--web.config.file``: loading the file, the server's TLS, basic auth.

``loading`` turns the file into a checked :class:`WebConfig` (every problem at once, each
with its line); ``tls`` builds the server's ``ssl.SSLContext`` from it; ``auth`` is the
basic-auth ASGI middleware; ``files`` notices changed files, so that all three follow the
file while the server runs. The names below are what the rest of the program and the tests
use.
"""

from availability_exporter.webconfig.auth import (
    REALM,
    ASGIApp,
    BasicAuthMiddleware,
    Message,
    Receive,
    Scope,
    Send,
)
from availability_exporter.webconfig.loading import (
    WebConfig,
    WebConfigError,
    WebConfigFile,
    load_web_config,
)
from availability_exporter.webconfig.tls import ClientAuth, TLSSettings

__all__ = [
    "REALM",
    "ASGIApp",
    "BasicAuthMiddleware",
    "ClientAuth",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "TLSSettings",
    "WebConfig",
    "WebConfigError",
    "WebConfigFile",
    "load_web_config",
]
