"""report.html: one self-contained file (no external assets): a stage timeline
per host, a table per suite, failure excerpts, links to the logs.  Pure."""

from __future__ import annotations

import html
import os
from collections.abc import Mapping

from hvlab.report.sanitize import clean
from hvlab.report.view import SuiteView, counts
from hvlab.results import Status

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1b1f24;max-width:1200px}
h1{font-size:22px} h2{font-size:17px;margin-top:28px} table{border-collapse:collapse;width:100%}
td,th{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
tr.r-fail td,tr.r-error td{background:#fff0f0} tr.r-skip td{color:#777}
.pill{display:inline-block;padding:1px 8px;border-radius:9px;color:#fff;font-size:12px}
.s-pass{background:#2da44e} .s-fail{background:#cf222e}
.s-error{background:#8250df} .s-skip{background:#8c959f}
.tl{position:relative;height:22px;background:#f6f8fa;margin:2px 0 8px 0;border-radius:3px}
.tl div{position:absolute;top:2px;height:18px;border-radius:3px;font-size:11px;color:#fff;
overflow:hidden;white-space:nowrap;padding-left:3px;box-sizing:border-box}
pre{background:#f6f8fa;padding:8px;overflow:auto;max-height:320px;font-size:12px}
.muted{color:#666}
"""

JS = """
document.getElementById('problems').addEventListener('change', function (e) {
  var only = e.target.checked;
  document.querySelectorAll('tr.r-pass, tr.r-skip').forEach(function (row) {
    row.style.display = only ? 'none' : '';
  });
});
"""


ROW_LIMIT = 2000  # rows listed per suite


def _e(text: object) -> str:
    """Sanitised (no NUL, ESC, BEL: the one sanitiser), then HTML-escaped."""
    return html.escape(clean(str(text), limit=None), quote=True)


def _link(log: str, base: str) -> str:
    if not log:
        return ""
    rel = os.path.relpath(log, base) if base and os.path.isabs(log) else log
    return f'<a href="{_e(rel)}">log</a>'


def _timeline(suites: list[SuiteView]) -> list[str]:
    starts = [s.start() for s in suites]
    known = [t for t in starts if t is not None]
    origin = min(known) if known else None
    spans = []
    cursor = 0.0
    for s, t in zip(suites, starts, strict=True):
        begin = (t - origin).total_seconds() if t is not None and origin is not None else cursor
        spans.append((s, begin, max(s.seconds, 0.01)))
        cursor = begin + s.seconds
    end = max((b + d for _, b, d in spans), default=1.0) or 1.0
    out = ['<h2>Timeline</h2>']
    for host in dict.fromkeys(s.host for s in suites):
        out.append(f"<div class='muted'>{_e(host)}</div><div class='tl'>")
        for s, begin, dur in spans:
            if s.host != host:
                continue
            left, width = 100 * begin / end, max(100 * dur / end, 0.4)
            out.append(f"<div class='s-{_e(s.status)}' style='left:{left:.2f}%;width:"
                       f"{width:.2f}%' title='{_e(s.cell)} {_e(s.stage)}: {s.seconds:.1f} s'>"
                       f"{_e(s.stage)}</div>")
        out.append("</div>")
    return out


def render(title: str, suites: list[SuiteView], facts: Mapping[str, str], base: str = "",
           classes: Mapping[tuple[str, str], str] | None = None,
           known: Mapping[tuple[str, str], str] | None = None) -> str:
    """``base``: the folder the HTML is written to (log links are made relative)."""
    total = counts(suites)
    known = known or {}
    out = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
           f"<title>{_e(title)}</title><style>{CSS}</style></head><body>",
           f"<h1>{_e(title)}</h1>"]
    out.append("<p>" + " · ".join(f"<b>{_e(k)}</b> <code>{_e(v)}</code>"
                                  for k, v in facts.items() if v) + "</p>")
    out.append(f"<p>{total[Status.PASS]} passed, {total[Status.FAIL]} failed, "
               f"{total[Status.ERROR]} errors, "
               f"{total[Status.SKIP]} skipped &nbsp; <label><input type='checkbox' id='problems'> "
               "only problems</label></p>")
    out += _timeline(suites)
    for s in suites:
        c = counts([s])
        out.append(f"<h2>{_e(s.name)} <span class='pill s-{_e(s.status)}'>"
                   f"{_e(s.status)}</span> <span class='muted'>{c[Status.PASS]}/{len(s.cases)} "
                   f"passed, {s.seconds:.1f} s</span></h2>")
        out.append("<table><tr><th>case</th><th>status</th><th>time</th>"
                   + ("<th>vs baseline</th>" if classes is not None else "")
                   + "<th>message</th><th></th></tr>")
        rows = s.cases
        if len(rows) > ROW_LIMIT:  # a huge suite: its problems, not 100k green rows
            rows = tuple(c for c in s.cases if c.status in ("fail", "error"))[:ROW_LIMIT]
            out.append(f"<tr><td colspan='6' class='muted'>{len(s.cases) - len(rows)} other "
                       "cases not listed (junit.xml has them all)</td></tr>")
        for case in rows:
            key = (case.classname, case.name)
            status = case.status
            note = " (known)" if key in known else " (flaky)" if case.flaky else ""
            cls = f"<td>{_e(classes.get(key, ''))}</td>" if classes is not None else ""
            out.append(f"<tr class='r-{_e(status)}'><td>{_e(case.name)}</td><td><span "
                       f"class='pill s-{_e(status)}'>{_e(status)}</span>{_e(note)}</td>"
                       f"<td>{case.seconds:.1f}</td>{cls}<td>{_e(case.message)}</td>"
                       f"<td>{_link(case.log, base)}</td></tr>")
            if status in ("fail", "error") and case.output:
                excerpt = case.output[-4000:]
                out.append(f"<tr class='r-{_e(status)}'><td colspan='6'><details><summary>"
                           f"output</summary><pre>{_e(excerpt)}</pre></details></td></tr>")
        out.append("</table>")
    out.append(f"<script>{JS}</script></body></html>")
    return "\n".join(out)
