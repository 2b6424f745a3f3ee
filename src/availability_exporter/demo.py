"""The built-in demo: local endpoints with every behaviour, so a new user sees the product work.

``--demo`` starts the local target server (target_server.py) on 127.0.0.1 (a free port)
inside the process and monitors it through two domains, ``127.0.0.1`` and ``localhost``:
healthy, slow (degraded), failing (500), flapping (alternately up and down) and the exercise's
``/body`` (200 only for ``{"foo":"bar"}``, else 422).  Nothing leaves the machine.
"""

from __future__ import annotations

import textwrap

from availability_exporter.target_server import TargetServer

SLOW_SECONDS = 0.7


class DemoServer(TargetServer):
    """The target server with the demo's slow path: 0.7 s, degraded at the 0.5 s threshold."""

    def __init__(self) -> None:
        super().__init__(slow_ms=SLOW_SECONDS * 1000)


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
