"""report.patchwork: a run's results as patchwork checks, one per patch and check.

Through patchwork's REST API: ``GET /api/patches/?msgid=<id>`` finds a patch,
``POST /api/patches/<id>/checks/`` adds a check (``state`` pending, success,
warning or fail; ``context``; ``description``; ``target_url``), with
``Authorization: Token <token>``.  The mapping from cases to checks is pure;
``Client`` does the HTTP.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass

from hvlab.errors import InfraError, UserError
from hvlab.report.mail import PER_PATCH, patch_cases
from hvlab.report.seriesrecord import PatchRecord, SeriesRecord
from hvlab.report.view import WARNING, SuiteView, is_warning
from hvlab.results import Status

TIMEOUT = 60
MAX_DESCRIPTION = 200


@dataclass(frozen=True)
class Check:
    state: str  # success | warning | fail
    context: str  # hvlab-<check>, a slug as patchwork wants it
    description: str


def context(check: str) -> str:
    """``hvlab-<check>`` as a slug (letters, digits, -, _): ``W=1`` -> ``hvlab-w1``."""
    slug = re.sub(r"[^a-z0-9_-]+", "", check.lower().replace(" ", "-").replace("_", "-"))
    return f"hvlab-{slug or 'check'}"


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_DESCRIPTION else text[:MAX_DESCRIPTION - 3] + "..."


def _check(name: str, status: Status, message: str) -> Check | None:
    if status is Status.SKIP:
        return None
    if status in (Status.FAIL, Status.ERROR):
        return Check("fail", context(name), _short(message or "failed"))
    if is_warning(status, message):
        return Check("warning", context(name), _short(message.removeprefix(WARNING)))
    return Check("success", context(name), "passed")


def patch_checks(patch: PatchRecord, suites: Sequence[SuiteView]) -> list[Check]:
    """The patch's own cases (applied, checkpatch, the check stage)."""
    return [found for check, c in patch_cases(patch, suites)
            if (found := _check(check, c.status, c.message)) is not None]


def series_checks(record: SeriesRecord, suites: Sequence[SuiteView]) -> list[Check]:
    """One check per stage that tested the whole series (build, boot, each suite),
    posted on the series' last patch."""
    out = []
    for suite in suites:
        if suite.stage in PER_PATCH or suite.stage in ("fetch", "configure"):
            continue
        worst = suite.status
        bad = next((c for c in suite.cases if c.status in (Status.FAIL, Status.ERROR)), None)
        found = _check(suite.stage, worst, bad.message or bad.name if bad else "")
        if found is not None:
            out.append(Check(found.state, found.context,
                             f"the series at its last patch: {found.description}"))
    return out


class Client:
    """patchwork's REST API at ``url`` (its web root, e.g. https://patchwork.kernel.org/)."""

    def __init__(self, url: str, token: str) -> None:
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise UserError(f"--url {url}: expected patchwork's http(s):// address")
        self.api = url.rstrip("/") + "/api/"
        self._token = token  # sent in a header only; never logged

    def _call(self, method: str, path: str, body: dict[str, str] | None = None) -> object:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.api + path, data=data, method=method, headers={
            "Accept": "application/json", "Content-Type": "application/json",
            "Authorization": f"Token {self._token}", "User-Agent": "hvlab report.patchwork"})
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            detail = exc.read(2000).decode("utf-8", "replace").strip()
            where = f"patchwork {method} {self.api}{path.split('?')[0]}"
            if exc.code in (401, 403):
                raise UserError(f"{where}: HTTP {exc.code}: the token was refused "
                                "(HVLAB_PATCHWORK_TOKEN)") from None
            if exc.code in (400, 404):
                raise UserError(f"{where}: HTTP {exc.code}: {detail[:300]}") from None
            raise InfraError(f"{where}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            raise InfraError(f"patchwork at {self.api}: cannot reach it: "
                             f"{getattr(exc, 'reason', exc)}") from None
        except ValueError:
            raise InfraError(f"patchwork at {self.api}: the answer to {method} "
                             f"{path.split('?')[0]} is not JSON") from None

    def find_patch(self, msgid: str) -> int | None:
        found = self._call("GET", "patches/?" + urllib.parse.urlencode({"msgid": msgid}))
        if isinstance(found, list) and found and isinstance(found[0], dict):
            return int(found[0]["id"])
        return None

    def post(self, patch_id: int, check: Check, target_url: str) -> None:
        body = {"state": check.state, "context": check.context,
                "description": check.description}
        if target_url:
            body["target_url"] = target_url
        self._call("POST", f"patches/{patch_id}/checks/", body)
