"""Basic auth for every HTTP request, as ASGI middleware: bcrypt hashes, fixed response headers."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import Any, Final

import bcrypt

__all__ = [
    "REALM",
    "ASGIApp",
    "BasicAuthMiddleware",
    "Message",
    "Receive",
    "Scope",
    "Send",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REALM: Final = "availability-exporter"

# bcrypt uses the first 72 bytes of a password; Go and htpasswd silently truncate,
# Python's bcrypt raises instead, so truncate to accept the same passwords.
_BCRYPT_MAX_PASSWORD: Final = 72
_CACHE_SIZE: Final = 1024
_UNAUTHORIZED_BODY: Final = b"Unauthorized\n"


class BasicAuthMiddleware:
    """ASGI middleware: HTTP basic auth against bcrypt hashes, plus fixed response headers.

    With no users, requests pass through and only the headers are added. With
    users, every HTTP request needs a valid ``Authorization: Basic`` header, else
    it gets 401 with a ``WWW-Authenticate`` challenge.

    bcrypt is slow on purpose (tens to hundreds of ms), so checks run in a worker
    thread, one at a time (like the toolkit's mutex: a flood of bad passwords
    costs one core, and leaves the default executor to DNS lookups), and
    successful checks are remembered under a keyed hash of user, password and
    stored hash, so a scraper's repeated requests cost microseconds and no
    plaintext password is kept. Unknown users are checked against a decoy hash of
    the highest configured cost, so timing does not tell which users exist.
    Neither passwords nor the Authorization header are ever logged.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        users: Mapping[str, bytes],
        headers: Mapping[str, str] | None = None,
        realm: str = REALM,
    ) -> None:
        # With users, this hashes a decoy at their highest cost: one bcrypt run
        # (about 70 ms at cost 10) at construction, not on a request.
        self._app = app
        self._users = tuple((name.encode("utf-8"), hashed) for name, hashed in users.items())
        self._headers = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in (headers or {}).items()
            if value
        ]
        self._header_names = frozenset(name for name, _ in self._headers)
        self._challenge = f'Basic realm="{realm}"'.encode("latin-1")
        self._decoy = b""
        if self._users:
            cost = max(int(hashed[4:6]) for _, hashed in self._users)
            self._decoy = bcrypt.hashpw(
                secrets.token_urlsafe(16).encode("ascii"), bcrypt.gensalt(rounds=cost)
            )
        self._cache_key = secrets.token_bytes(32)
        self._cache: OrderedDict[bytes, None] = OrderedDict()
        self._bcrypt_slot = asyncio.Semaphore(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self._app(scope, receive, send)
            return
        if kind == "http" and self._headers:
            send = self._adding_headers(send)
        if self._users and not await self._authorized(scope):
            if kind == "http":
                await self._unauthorized(send)
            else:
                await receive()  # websocket.connect; closing before accept answers 403.
                await send({"type": "websocket.close", "code": 1008})
            return
        await self._app(scope, receive, send)

    def _adding_headers(self, send: Send) -> Send:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [
                    (name, value)
                    for name, value in message.get("headers", ())
                    if bytes(name).lower() not in self._header_names
                ]
                message = {**message, "headers": [*kept, *self._headers]}
            await send(message)

        return send_with_headers

    async def _unauthorized(self, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(_UNAUTHORIZED_BODY)).encode("ascii")),
                    (b"www-authenticate", self._challenge),
                ],
            }
        )
        await send({"type": "http.response.body", "body": _UNAUTHORIZED_BODY})

    async def _authorized(self, scope: Scope) -> bool:
        credentials = _basic_credentials(scope.get("headers", ()))
        if credentials is None:
            return False
        user, password = credentials
        password = password[:_BCRYPT_MAX_PASSWORD]
        stored: bytes | None = None
        # Every configured name is compared, in constant time each, so the time
        # taken does not depend on which (or whether a) name matched.
        for name, hashed in self._users:
            if hmac.compare_digest(name, user):
                stored = hashed
        hashed = self._decoy if stored is None else stored
        key = self._cache_entry(user, password, hashed)
        if stored is not None and self._cached(key):
            return True
        async with self._bcrypt_slot:
            # Concurrent first requests with the same credentials queue here; the
            # first one fills the cache for the rest.
            if stored is not None and self._cached(key):
                return True
            matched = await asyncio.to_thread(_check_password, password, hashed)
        if stored is None or not matched:
            return False
        self._cache[key] = None
        if len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return True

    def _cache_entry(self, user: bytes, password: bytes, hashed: bytes) -> bytes:
        mac = hmac.new(self._cache_key, digestmod=hashlib.sha256)
        for part in (user, password, hashed):
            mac.update(len(part).to_bytes(4, "big"))
            mac.update(part)
        return mac.digest()

    def _cached(self, key: bytes) -> bool:
        if key in self._cache:
            self._cache.move_to_end(key)
            return True
        return False


def _check_password(password: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:
        # A hash bcrypt cannot parse never matches; the request gets 401, not 500.
        return False


def _basic_credentials(headers: Iterable[tuple[bytes, bytes]]) -> tuple[bytes, bytes] | None:
    """User and password from the first Authorization header, if it is well-formed Basic."""
    for name, value in headers:
        if bytes(name).lower() != b"authorization":
            continue
        scheme, _, token = bytes(value).strip().partition(b" ")
        if scheme.lower() != b"basic":
            return None
        try:
            decoded = base64.b64decode(token.strip(), validate=True)
        except (binascii.Error, ValueError):
            return None
        user, colon, password = decoded.partition(b":")
        return (user, password) if colon else None
    return None
