"""report.html: one self-contained file (no external assets).  Pure.

The verdict first, then each failure with its reason, an anchor of its own,
a link to its row and its log; each warning (a passing case a ``warn`` check
noted) the same way; then the environment (the facts, compiler,
QEMU and hvlab versions, links to the run's console, dmesg and config
logs); then the timeline, bars labelled with their durations and a table
beside them, so a stage that dominates does not hide the others; then a
table per suite.  Cases without a time show none (never "0.0")."""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence

from hvlab.report.sanitize import clean
from hvlab.report.seriesrecord import SeriesRecord
from hvlab.report.view import WARNING, SuiteView, counts, verdict
from hvlab.results import Status

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1b1f24;max-width:1200px}
h1{font-size:22px} h2{font-size:17px;margin-top:28px} table{border-collapse:collapse;width:100%}
td,th{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
tr.r-fail td,tr.r-error td{background:#fff0f0} tr.r-skip td{color:#777}
.pill{display:inline-block;padding:1px 8px;border-radius:9px;color:#fff;font-size:12px}
.s-pass{background:#2da44e} .s-fail{background:#cf222e}
.s-error{background:#8250df} .s-skip{background:#8c959f} .s-warn{background:#bf8700}
.tl{position:relative;height:22px;background:#f6f8fa;margin:2px 0 8px 0;border-radius:3px}
.tl div{position:absolute;top:2px;height:18px;border-radius:3px;font-size:11px;color:#fff;
overflow:hidden;white-space:nowrap;padding-left:3px;box-sizing:border-box}
pre{background:#f6f8fa;padding:8px;overflow:auto;max-height:320px;font-size:12px}
.muted{color:#666}
.verdict{font-size:18px;font-weight:600;padding:8px 12px;border-radius:6px;color:#fff}
.v-pass{background:#2da44e} .v-fail{background:#cf222e} .v-error{background:#8250df}
.v-skip{background:#8c959f}
ol.failures li,ol.warnings li{margin:4px 0} .tlrow{display:flex;gap:16px} .tlrow>div{flex:1}
table.times td:nth-child(3),table.times td:nth-child(4){text-align:right}
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


def _seconds(value: float) -> str:
    """A duration as shown: none when the case was not timed."""
    return f"{value:.1f}" if value > 0 else ""


def _spans(suites: list[SuiteView]) -> list[tuple[SuiteView, float, float]]:
    starts = [s.start() for s in suites]
    known = [t for t in starts if t is not None]
    origin = min(known) if known else None
    spans = []
    cursor = 0.0
    for s, t in zip(suites, starts, strict=True):
        begin = (t - origin).total_seconds() if t is not None and origin is not None else cursor
        spans.append((s, begin, max(s.seconds, 0.01)))
        cursor = begin + s.seconds
    return spans


def _timeline(suites: list[SuiteView]) -> list[str]:
    spans = _spans(suites)
    end = max((b + d for _, b, d in spans), default=1.0) or 1.0
    out = ["<h2 id='timeline'>Timeline</h2><div class='tlrow'><div>"]
    for host in dict.fromkeys(s.host for s in suites):
        out.append(f"<div class='muted'>{_e(host)}</div><div class='tl'>")
        for s, begin, dur in spans:
            if s.host != host:
                continue
            left, width = 100 * begin / end, max(100 * dur / end, 0.4)
            label = f"{s.stage} {s.seconds:.1f} s" if s.seconds > 0 else s.stage
            out.append(f"<div class='s-{_e(s.status)}' style='left:{left:.2f}%;width:"
                       f"{width:.2f}%' title='{_e(s.cell)} {_e(s.stage)}: {s.seconds:.1f} s'>"
                       f"{_e(label)}</div>")
        out.append("</div>")
    total = sum(s.seconds for s in suites)
    out.append("</div><div><table class='times'><tr><th>stage</th><th>host</th>"
               "<th>time (s)</th><th>share</th></tr>")
    for s, _, _ in sorted(spans, key=lambda x: -x[0].seconds):
        out.append(f"<tr><td>{_e(s.stage)}</td><td>{_e(s.host)}</td>"
                   f"<td>{_seconds(s.seconds)}</td>"
                   f"<td>{f'{100 * s.seconds / total:.0f}%' if total else ''}</td></tr>")
    out.append("</table></div></div>")
    return out


def _environment(facts: Mapping[str, str], links: Sequence[tuple[str, str]]) -> list[str]:
    out = ["<h2 id='environment'>Environment</h2><table>"]
    out += [f"<tr><th>{_e(k)}</th><td><code>{_e(v)}</code></td></tr>"
            for k, v in facts.items() if v]
    if links:
        out.append("<tr><th>logs</th><td>" + " · ".join(
            f"<a href='{_e(path)}'>{_e(label)}</a>" for label, path in links) + "</td></tr>")
    out.append("</table>")
    return out


def _series(records: Sequence[SeriesRecord]) -> list[str]:
    if not records:
        return []
    out = ["<h2 id='series'>Series</h2>"]
    for r in records:
        title = _e(r.cover_subject or r.series)
        if r.url.startswith(("http://", "https://")):
            title = f"<a href='{_e(r.url)}'>{title}</a>"
        out.append(f"<h3>{title} <span class='muted'>on {_e(r.kernel)} "
                   f"({_e(r.base[:12])})</span></h3>")
        if r.cover:
            out.append(f"<pre class='cover'>{_e(r.cover)}</pre>")
        out.append("<ol>")
        for p in r.patches:
            who = f" <span class='muted'>{_e(p.author)}</span>" if p.author else ""
            applied = f"<code>{_e(p.commit[:12])}</code>" if p.commit else "did not apply"
            out.append(f"<li>{_e(p.subject)}{who} ({applied})</li>")
        out.append("</ol>")
    return out


def _warnings(suites: list[SuiteView], anchors: Mapping[tuple[int, int], str],
              base: str) -> list[str]:
    """Passing cases a ``warn`` check noted, each linked to its row and its log."""
    found = [(i, j) for i, j in anchors if suites[i].cases[j].warned]
    if not found:
        return []
    out = [f"<h2 id='warnings'>Warnings ({len(found)}, not failing)</h2><ol class='warnings'>"]
    for n, (i, j) in enumerate(found[:ROW_LIMIT], 1):
        case = suites[i].cases[j]
        said = case.message.removeprefix(WARNING).strip()
        out.append(f"<li id='w-{n}'><span class='pill s-warn'>warning</span> "
                   f"<a href='#{anchors[i, j]}'>{_e(case.name)}</a> "
                   f"<span class='muted'>{_e(case.classname)}</span>: {_e(said)} "
                   f"{_link(case.log, base)}</li>")
    out.append("</ol>")
    return out


def render(title: str, suites: list[SuiteView], facts: Mapping[str, str], base: str = "",
           classes: Mapping[tuple[str, str], str] | None = None,
           known: Mapping[tuple[str, str], str] | None = None,
           links: Sequence[tuple[str, str]] = (),
           series: Sequence[SeriesRecord] = ()) -> str:
    """``base``: the folder the HTML is written to (log links are made relative);
    ``links``: (label, path relative to it) of the run's console, dmesg, config;
    ``series``: the series the run applied (their cover letters and patches)."""
    total = counts(suites)
    known = known or {}
    said = verdict(total).value
    out = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
           f"<title>{_e(title)}</title><style>{CSS}</style></head><body>",
           f"<h1>{_e(title)}</h1>",
           f"<p class='verdict v-{said}' id='verdict'>{_e(said.upper())}: "
           f"{total[Status.PASS]} passed, {total[Status.FAIL]} failed, "
           f"{total[Status.ERROR]} errors, {total[Status.SKIP]} skipped</p>"]
    anchors = {(i, j): f"c-{i}-{j}" for i, s in enumerate(suites)
               for j, c in enumerate(s.cases) if c.status in ("fail", "error") or c.warned}
    bad = [(i, j) for i, j in anchors if suites[i].cases[j].status in ("fail", "error")]
    if bad:
        out.append(f"<h2 id='failures'>Failures and errors ({len(bad)})</h2>"
                   "<ol class='failures'>")
        for n, (i, j) in enumerate(bad[:ROW_LIMIT], 1):
            failing = suites[i].cases[j]
            note = " (known)" if (failing.classname, failing.name) in known else ""
            log = _link(failing.log, base)
            out.append(f"<li id='f-{n}'><span class='pill s-{_e(failing.status)}'>"
                       f"{_e(failing.status)}</span> <a href='#{anchors[i, j]}'>"
                       f"{_e(suites[i].name)} › {_e(failing.name)}</a>{_e(note)}: "
                       f"{_e(failing.message)} {log}</li>")
        out.append("</ol>")
    out += _warnings(suites, anchors, base)
    out += _series(series)
    out += _environment(facts, links)
    out += _timeline(suites)
    out.append("<p><label><input type='checkbox' id='problems'> only problems</label></p>")
    for i, s in enumerate(suites):
        c = counts([s])
        out.append(f"<h2>{_e(s.name)} <span class='pill s-{_e(s.status)}'>"
                   f"{_e(s.status)}</span> <span class='muted'>{c[Status.PASS]}/{len(s.cases)} "
                   f"passed{', ' + _seconds(s.seconds) + ' s' if s.seconds > 0 else ''}"
                   "</span></h2>")
        out.append("<table><tr><th>case</th><th>status</th><th>time (s)</th>"
                   + ("<th>vs baseline</th>" if classes is not None else "")
                   + "<th>message</th><th></th></tr>")
        rows = list(enumerate(s.cases))
        if len(rows) > ROW_LIMIT:  # a huge suite: its problems, not 100k green rows;
            # its failures before its warnings, in the suite's order
            failed_rows = [row for row in rows if row[1].status in ("fail", "error")]
            warned_rows = [row for row in rows if row[1].warned]
            rows = sorted((failed_rows + warned_rows)[:ROW_LIMIT], key=lambda row: row[0])
            out.append(f"<tr><td colspan='6' class='muted'>{len(s.cases) - len(rows)} other "
                       "cases not listed (junit.xml has them all)</td></tr>")
        for j, case in rows:
            key = (case.classname, case.name)
            status = case.status
            note = " (known)" if key in known else " (flaky)" if case.flaky else ""
            cls = f"<td>{_e(classes.get(key, ''))}</td>" if classes is not None else ""
            anchor = f" id='{anchors[i, j]}'" if (i, j) in anchors else ""
            row = "warn" if case.warned else status  # "only problems" keeps warnings
            out.append(f"<tr class='r-{_e(row)}'{anchor}><td>{_e(case.name)}</td><td><span "
                       f"class='pill s-{_e(status)}'>{_e(status)}</span>{_e(note)}</td>"
                       f"<td>{_seconds(case.seconds)}</td>{cls}<td>{_e(case.message)}</td>"
                       f"<td>{_link(case.log, base)}</td></tr>")
            if status in ("fail", "error") and case.output:
                excerpt = case.output[-4000:]
                out.append(f"<tr class='r-{_e(status)}'><td colspan='6'><details><summary>"
                           f"output</summary><pre>{_e(excerpt)}</pre></details></td></tr>")
        out.append("</table>")
    out.append(f"<script>{JS}</script></body></html>")
    return "\n".join(out)
