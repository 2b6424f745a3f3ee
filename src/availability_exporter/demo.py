"""The built-in demo: local endpoints with every behaviour, so a new user sees the product work.

``--demo`` starts a tiny HTTP server on 127.0.0.1 (a free port) inside the process and monitors
it through two domains, ``127.0.0.1`` and ``localhost``: healthy, slow (degraded), failing
(500), flapping (alternately up and down) and the exercise's ``/body`` (200 only for
``{"foo":"bar"}``, else 422).  Nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import textwrap

SLOW_SECONDS = 0.7
_REASONS = {200: "OK", 404: "Not Found", 422: "Unprocessable Entity", 500: "Internal Server Error"}


class DemoServer:
    """A minimal HTTP/1.1 server with the demo behaviours; one request per connection."""

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._flap = 0
        self.port = 0

    async def start(self, host: str = "127.0.0.1") -> None:
        self._server = await asyncio.start_server(self._handle, host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            length = 0
            for line in lines[1:]:
                key, _, value = line.partition(":")
                if key.strip().lower() == "content-length":
                    length = int(value.strip())
            body = await reader.readexactly(min(length, 65536)) if length else b""
            status = await self._respond(method, path, body)
            text = f'{{"status": {status}}}\n'.encode()
            writer.write(
                f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(text)}\r\n"
                "Connection: close\r\n\r\n".encode() + text
            )
            await writer.drain()
        except (OSError, ValueError, asyncio.IncompleteReadError, TimeoutError):
            pass  # a demo client that went away is not an error
        except asyncio.CancelledError:
            # Shutdown cancels a handler mid-sleep; Python 3.11's start_server callback would
            # log the cancellation as an error, and the handler has nothing left to do.
            pass
        finally:
            writer.close()

    async def _respond(self, method: str, path: str, body: bytes) -> int:
        if path in ("/", "/healthy"):
            return 200
        if path == "/slow":
            await asyncio.sleep(SLOW_SECONDS)
            return 200
        if path == "/error":
            return 500
        if path == "/flap":
            self._flap += 1
            return 200 if self._flap % 2 else 500
        if path == "/body" and method == "POST":
            try:
                return 200 if json.loads(body) == {"foo": "bar"} else 422
            except ValueError:
                return 422
        return 404


def demo_config(port: int) -> str:
    """The demo's endpoints file, in the Fetch format with a few extensions."""
    return textwrap.dedent(f"""\
        # The exercise's sample.yaml, against the built-in server (127.0.0.1: 50 %).
        - name: demo body ok
          url: http://127.0.0.1:{port}/body
          method: POST
          headers:
            content-type: application/json
            user-agent: fetch-synthetic-monitor
          body: '{{"foo":"bar"}}'
        - name: demo index
          url: http://127.0.0.1:{port}/
        - name: demo body wrong
          url: http://127.0.0.1:{port}/body
          method: POST
          headers:
            content-type: application/json
          body: '{{}}'
        - name: demo error
          url: http://127.0.0.1:{port}/error
        # A second domain: healthy, slow (degraded, 0.7 s > 0.5 s) and flapping.
        - name: demo healthy
          url: http://localhost:{port}/healthy
        - name: demo slow
          url: http://localhost:{port}/slow
          latency_threshold: 0.5
        - name: demo flapping
          url: http://localhost:{port}/flap
        """)
