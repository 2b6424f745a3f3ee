"""``python -m tests.adversarial``: serve the adversarial paths from a process of their own.

Prints the plain listener's base URL on the first line of stdout, then serves until stdin
closes or SIGTERM.  Tests whose client measures latency use this instead of a thread, so the
server never competes with the prober for the GIL.
"""

from __future__ import annotations

import sys

from tests.adversarial.server import serve_in_thread


def main() -> None:
    with serve_in_thread() as server:
        sys.stdout.write(server.base_url + "\n")
        sys.stdout.flush()
        sys.stdin.read()  # returns when the parent closes our stdin or exits


if __name__ == "__main__":
    main()
