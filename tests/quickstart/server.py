"""The quickstart test's app: not the sample app, and nothing of Bascule's. A web service of
its own, as a team would bring one: /healthz says it is up, /version which release this is
(APP_VERSION, set in its image). Exits on SIGTERM, which is all Kubernetes asks of it.

    python3 server.py        (port 8080; tests/support/quickstart.py builds its images)
"""

from __future__ import annotations

import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

VERSION = os.environ.get("APP_VERSION", "unknown")
PORT = 8080


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._answer(200, {"status": "ok"})
        elif self.path == "/version":
            self._answer(200, {"version": VERSION})
        else:
            self._answer(404, {"error": f"no {self.path}"})

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        return  # probes every second would fill the pod's log


def main() -> None:
    server = ThreadingHTTPServer(("", PORT), Handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"web {VERSION} on :{PORT}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
