"""Basic auth for every HTTP request, as ASGI middleware: bcrypt hashes, fixed response headers."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import bcrypt

__all__ = [
    "CACHE_SECONDS",
    "REALM",
    "ASGIApp",
    "AuthConfig",
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
_BCRYPT_ALPHABET: Final = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_CACHE_SIZE: Final = 1000
CACHE_SECONDS: Final = 60.0
"""How long a successful check is remembered: bcrypt runs once a minute per credential."""
_UNAUTHORIZED_BODY: Final = b"Unauthorized\n"


class AuthConfig(Protocol):
    """What the middleware serves: user name to bcrypt hash, and headers for every response."""

    @property
    def users(self) -> Mapping[str, bytes]: ...

    @property
    def headers(self) -> Mapping[str, str]: ...


@dataclass(frozen=True)
class _Fixed:
    users: Mapping[str, bytes]
    headers: Mapping[str, str]


@dataclass(frozen=True)
class _Prepared:
    """One config in the form a request needs: encoded names and headers, and the decoy hash."""

    config: AuthConfig
    users: tuple[tuple[bytes, bytes], ...]
    headers: tuple[tuple[bytes, bytes], ...]
    header_names: frozenset[bytes]
    decoy: bytes

    @classmethod
    def of(cls, config: AuthConfig) -> _Prepared:
        users = tuple((name.encode("utf-8"), hashed) for name, hashed in config.users.items())
        headers = tuple(
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in config.headers.items()
            if value
        )
        return cls(
            config=config,
            users=users,
            headers=headers,
            header_names=frozenset(name for name, _ in headers),
            decoy=_decoy_hash(hashed for _, hashed in users),
        )


def _decoy_hash(hashes: Iterable[bytes]) -> bytes:
    """A well-formed hash at the highest cost among ``hashes`` that no password matches.

    Checking a password against it costs what checking a real user's does, so the time
    of a 401 does not tell an unknown user from a wrong password. The salt alone sets the
    work, so it is made without running bcrypt (that would cost a whole check).
    """
    costs = [int(hashed[4:6]) for hashed in hashes]
    if not costs:
        return b""
    filler = "".join(secrets.choice(_BCRYPT_ALPHABET) for _ in range(31))
    return bcrypt.gensalt(rounds=max(costs)) + filler.encode("ascii")


@dataclass
class _Turn:
    """One client's place in line for bcrypt, and how many of its requests share it."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    holders: int = 0


class BasicAuthMiddleware:
    """ASGI middleware: HTTP basic auth against bcrypt hashes, plus fixed response headers.

    With no users, requests pass through and only the headers are added. With
    users, every HTTP request needs a valid ``Authorization: Basic`` header, else
    it gets 401 with a ``WWW-Authenticate`` challenge.

    ``source`` is asked on every request, so users and headers follow a web config that
    changes while the server runs (``users``/``headers`` instead give fixed ones).

    bcrypt is slow on purpose (tens to hundreds of ms), so:

    - checks run in a worker thread, one at a time across the server (a flood of bad
      passwords costs one core, and leaves the default executor to DNS lookups);
    - each client (by IP address) has one check at a time, so a client sending many
      requests waits behind its own: another client (Prometheus) waits for at most
      one check per other client in line, however many requests they sent;
    - successful checks are remembered for ``cache_seconds`` (at most 1,000 of them)
      under a keyed hash of user, password and stored hash, so a scraper pays for
      bcrypt once a minute and no plaintext password is kept. A change of the users
      forgets them all, so an old password stops working at once;
    - unknown users are checked against a decoy hash of the highest configured cost,
      and every configured name is compared in constant time.

    Neither passwords nor the Authorization header are ever logged.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        users: Mapping[str, bytes] | None = None,
        headers: Mapping[str, str] | None = None,
        source: Callable[[], AuthConfig] | None = None,
        realm: str = REALM,
        cache_seconds: float = CACHE_SECONDS,
    ) -> None:
        if source is None:
            fixed = _Fixed(users or {}, headers or {})

            def source() -> AuthConfig:
                return fixed

        elif users is not None or headers is not None:
            raise TypeError("give users and headers, or a source of them, not both")
        self._app = app
        self._source = source
        self._prepared = _Prepared.of(source())
        self._challenge = f'Basic realm="{realm}"'.encode("latin-1")
        self._cache_seconds = cache_seconds
        self._cache_key = secrets.token_bytes(32)
        self._cache: OrderedDict[bytes, float] = OrderedDict()
        """Keyed hash of a successful check to the monotonic time it expires."""
        self._bcrypt_slot = asyncio.Semaphore(1)
        self._turns: dict[str, _Turn] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self._app(scope, receive, send)
            return
        prepared = self._current()
        if kind == "http" and prepared.headers:
            send = self._adding_headers(send, prepared)
        if prepared.users and not await self._authorized(scope, prepared):
            if kind == "http":
                await self._unauthorized(send)
            else:
                await receive()  # websocket.connect; closing before accept answers 403.
                await send({"type": "websocket.close", "code": 1008})
            return
        await self._app(scope, receive, send)

    def _current(self) -> _Prepared:
        config = self._source()
        if config is not self._prepared.config:
            self._prepared = _Prepared.of(config)
            self._cache.clear()
        return self._prepared

    @staticmethod
    def _adding_headers(send: Send, prepared: _Prepared) -> Send:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [
                    (name, value)
                    for name, value in message.get("headers", ())
                    if bytes(name).lower() not in prepared.header_names
                ]
                message = {**message, "headers": [*kept, *prepared.headers]}
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

    async def _authorized(self, scope: Scope, prepared: _Prepared) -> bool:
        credentials = _basic_credentials(scope.get("headers", ()))
        if credentials is None:
            return False
        user, password = credentials
        password = password[:_BCRYPT_MAX_PASSWORD]
        stored: bytes | None = None
        # Every configured name is compared, in constant time each, so the time
        # taken does not depend on which (or whether a) name matched.
        for name, hashed in prepared.users:
            if hmac.compare_digest(name, user):
                stored = hashed
        hashed = prepared.decoy if stored is None else stored
        key = self._cache_entry(user, password, hashed)
        if stored is not None and self._cached(key):
            return True
        async with self._turn(_client_address(scope)), self._bcrypt_slot:
            # Requests with the same credentials that queued meanwhile find the cache
            # filled by the first one.
            if stored is not None and self._cached(key):
                return True
            matched = await asyncio.to_thread(_check_password, password, hashed)
        if stored is None or not matched:
            return False
        if prepared is self._prepared:  # users that changed during the check start afresh
            self._cache[key] = time.monotonic() + self._cache_seconds
            self._cache.move_to_end(key)
            while len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return True

    @contextlib.asynccontextmanager
    async def _turn(self, client: str) -> AsyncIterator[None]:
        """Wait for this client's previous checks; the entry goes when no request holds it."""
        turn = self._turns.get(client)
        if turn is None:
            turn = self._turns[client] = _Turn()
        turn.holders += 1
        try:
            async with turn.lock:
                yield
        finally:
            turn.holders -= 1
            if not turn.holders:
                del self._turns[client]

    def _cache_entry(self, user: bytes, password: bytes, hashed: bytes) -> bytes:
        mac = hmac.new(self._cache_key, digestmod=hashlib.sha256)
        for part in (user, password, hashed):
            mac.update(len(part).to_bytes(4, "big"))
            mac.update(part)
        return mac.digest()

    def _cached(self, key: bytes) -> bool:
        expires = self._cache.get(key)
        if expires is None:
            return False
        if expires <= time.monotonic():
            del self._cache[key]
            return False
        self._cache.move_to_end(key)
        return True


def _client_address(scope: Scope) -> str:
    # Without a peer address (a test transport, a Unix socket) all requests share one line.
    client = scope.get("client")
    return str(client[0]) if client else ""


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
