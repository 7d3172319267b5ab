"""A stand-in for patchwork: a small HTTP server with the part of patchwork's
REST API that report.patchwork uses.

It is not patchwork.  It implements, as patchwork's API documentation
describes them (https://patchwork.readthedocs.io/en/latest/api/rest/):

* ``GET /api/patches/?msgid=<id>``: a JSON list of the patches with that
  Message-Id (``id``, ``msgid`` with angle brackets, ``name``);
* ``POST /api/patches/<id>/checks/``: a check with ``state`` (pending,
  success, warning, fail), ``context`` (a slug), ``description`` and
  ``target_url``; ``Authorization: Token <token>`` required (401 without,
  403 with a wrong one); 400 for a bad state or context; 201 with the check.

Nothing else (projects, series, events, pagination) is implemented.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

from tests.http_stub import serving

STATES = ("pending", "success", "warning", "fail")
SLUG = re.compile(r"^[-a-zA-Z0-9_]+$")


@dataclass
class Patchwork:
    url: str
    token: str
    patches: dict[int, tuple[str, str]] = field(default_factory=dict)  # id -> (msgid, name)
    checks: dict[int, list[dict[str, str]]] = field(default_factory=dict)
    seen_auth: list[str] = field(default_factory=list)

    def add_patch(self, msgid: str, name: str) -> int:
        pid = 1000 + len(self.patches)
        self.patches[pid] = (f"<{msgid}>", name)
        return pid


@contextmanager
def patchwork_server(token: str = "0123456789abcdef") -> Iterator[Patchwork]:
    holder: list[Patchwork] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, code: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            pw = holder[0]
            url = urllib.parse.urlsplit(self.path)
            if url.path != "/api/patches/":
                return self._answer(404, {"detail": "Not found."})
            wanted = urllib.parse.parse_qs(url.query).get("msgid", [""])[0].strip("<>")
            found = [{"id": pid, "msgid": m, "name": n} for pid, (m, n) in pw.patches.items()
                     if m.strip("<>") == wanted]
            return self._answer(200, found)

        def do_POST(self) -> None:
            pw = holder[0]
            m = re.fullmatch(r"/api/patches/(\d+)/checks/", urllib.parse.urlsplit(self.path).path)
            auth = self.headers.get("Authorization", "")
            pw.seen_auth.append(auth)
            if not auth:
                return self._answer(401, {"detail": "Authentication credentials were not "
                                          "provided."})
            if auth != f"Token {pw.token}":
                return self._answer(403, {"detail": "Invalid token."})
            if m is None or int(m.group(1)) not in pw.patches:
                return self._answer(404, {"detail": "Not found."})
            length = int(self.headers.get("Content-Length", "0"))
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                return self._answer(400, {"detail": "JSON parse error"})
            if body.get("state") not in STATES:
                return self._answer(400, {"state": [f"\"{body.get('state')}\" is not a valid "
                                                    "choice."]})
            if not SLUG.match(str(body.get("context", ""))):
                return self._answer(400, {"context": ["Enter a valid \"slug\"."]})
            check = {k: str(body.get(k, "")) for k in ("state", "context", "description",
                                                       "target_url")}
            pw.checks.setdefault(int(m.group(1)), []).append(check)
            return self._answer(201, {"id": sum(map(len, pw.checks.values())), **check})

        def log_message(self, format: str, *args: object) -> None:
            pass

    with serving(Handler) as port:
        holder.append(Patchwork(f"http://127.0.0.1:{port}/", token))
        yield holder[0]
