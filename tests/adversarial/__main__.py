"""``python -m tests.adversarial [--certs DIR]``: serve the adversarial paths in a process.

Prints one JSON line (ports of the plain, hang-accept and TLS listeners), then serves until
stdin closes.  Tests whose client measures latency use this instead of a thread, so the server
never competes with the prober for the GIL.  With ``--certs``, DIR is created by make_certs
(or reused when it already holds them) and one TLS listener per certificate kind starts.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tests.adversarial.certs import CertKind, make_certs
from tests.adversarial.server import serve_in_thread


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.adversarial")
    parser.add_argument("--certs", type=Path, help="directory for the test certificates")
    args = parser.parse_args()
    certs = make_certs(args.certs) if args.certs is not None else None
    with serve_in_thread(certs=certs) as server:
        tls = {kind.value: server.tls_port(kind) for kind in CertKind} if certs else {}
        info = {
            "port": server.port, "hang_accept_port": server.hang_accept_port, "tls_ports": tls,
            "ca_path": str(certs.ca_path) if certs else None,
            "not_after": {kind.value: certs[kind].not_after.timestamp() for kind in CertKind}
            if certs else {},
        }
        sys.stdout.write(json.dumps(info) + "\n")
        sys.stdout.flush()
        sys.stdin.read()  # returns when the parent closes our stdin or exits


if __name__ == "__main__":
    main()
