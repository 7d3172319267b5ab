"""summary.md: the verdict, regressions, failures and warnings first, then the
stages; short enough for a pull-request comment or a CI step summary.  Pure.

Every name, message and fact passes the sanitiser and is escaped for
Markdown: a test name a guest printed (``<img src=x onerror=...>``,
``**bold**``, a ``|`` that would end a table cell) is shown as text, never
rendered, in a GitHub step summary or a merge request comment."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from hvlab.report.sanitize import clean_line
from hvlab.report.seriesrecord import SeriesRecord
from hvlab.report.view import WARNING, CaseView, SuiteView, counts, verdict, warnings
from hvlab.results import Status

ICON = {"pass": "✅", "fail": "❌", "error": "⛔", "skip": "⏭️"}
LIMIT = 30  # failures listed; the rest are counted


# what could make text markup in a line that does not start with it: emphasis,
# code, links and images, raw HTML, entities, table cells, strikethrough
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~&])")


def _one_line(text: str, limit: int = 200) -> str:
    line = clean_line(text, limit=10 * limit)
    line = line if len(line) <= limit else line[: limit - 1] + "…"
    return md(line)


def md(text: str) -> str:
    """``text`` as Markdown that renders as itself (one clean line)."""
    return _MD_SPECIAL.sub(r"\\\1", clean_line(text, limit=2000))


def _code(text: str) -> str:
    return "`" + clean_line(text).replace("`", "'") + "`"


def _log(c: CaseView) -> str:
    """A link to the case's log when it is relative to the report (a run folder's)."""
    return f" ([log]({c.log.replace(' ', '%20').replace(')', '%29')}))" \
        if c.log and not c.log.startswith("/") else ""


def _failure(s: SuiteView, c: CaseView) -> str:
    return f"- {ICON[c.status]} **{md(s.name)}** › {md(c.name)}: {_one_line(c.message)}{_log(c)}"


def _warning(c: CaseView) -> str:
    """The case, its classname (in a matrix it names the cell) and what it noted."""
    said = c.message.removeprefix(WARNING).strip()
    return f"- ⚠️ {md(c.name)} — {md(c.classname)}: {_one_line(said)}{_log(c)}"


def warning_lines(suites: list[SuiteView]) -> list[str]:
    """Passing cases a ``warn`` check noted: shown, never counted as failures."""
    found = warnings(suites)
    if not found:
        return []
    lines = [f"## Warnings ({len(found)}, not failing)", ""]
    lines += [_warning(c) for _, c in found[:LIMIT]]
    if len(found) > LIMIT:
        lines.append(f"- … and {len(found) - LIMIT} more (see junit.xml)")
    return lines + [""]


def series_lines(records: Sequence[SeriesRecord]) -> list[str]:
    """What was tested: each series, its cover letter, its patches."""
    if not records:
        return []
    lines = ["## Series", ""]
    for r in records:
        title = md(r.cover_subject or r.series)
        lines.append((f"**[{title}]({r.url.replace(' ', '%20').replace(')', '%29')})**"
                      if r.url.startswith(("http://", "https://")) else f"**{title}**")
                     + f" on {md(r.kernel)} ({_code(r.base[:12])})")
        lines.append("")
        if r.cover:
            lines += [f"> {md(clean_line(line, limit=300))}" if line else ">"
                      for line in r.cover.splitlines()]
            lines.append("")
        for p in r.patches:
            who = f" — {md(p.author)}" if p.author else ""
            applied = _code(p.commit[:12]) if p.commit else "did not apply"
            lines.append(f"{p.index}. {md(p.subject)}{who} ({applied})")
        lines.append("")
    return lines


def render(title: str, suites: list[SuiteView], facts: Mapping[str, str],
           classes: Mapping[tuple[str, str], str] | None = None,
           known: Mapping[tuple[str, str], str] | None = None,
           notes: list[str] | None = None,
           links: Sequence[tuple[str, str]] = (),
           series: Sequence[SeriesRecord] = ()) -> str:
    """The verdict and the failures first (then known failures, warnings and
    flaky cases), then the series, the environment and the stages.
    ``classes``: (classname, name) -> regression | fixed | ... from a comparison;
    ``known``: failing cases a known-failures entry covers -> its reason;
    ``links``: (label, relative path) of the run's consoles, dmesg and configs;
    ``series``: the series the run applied (their cover letters and patches)."""
    known = known or {}
    total = counts(suites)
    lines = [f"# {md(title)}", "",
             f"**{verdict(total).value.upper()}**: {total[Status.PASS]} passed, "
             f"{total[Status.FAIL]} failed, "
             f"{total[Status.ERROR]} errors, {total[Status.SKIP]} skipped", ""]
    bad: list[tuple[SuiteView, CaseView]] = [(s, c) for s in suites for c in s.cases
                                             if c.status in ("fail", "error")]
    if classes is not None:
        regressions = [(s, c) for s, c in bad if classes.get((c.classname, c.name)) ==
                       "regression" and (c.classname, c.name) not in known]
        fixed = [k for k, v in classes.items() if v == "fixed"]
        lines += [f"## Regressions ({len(regressions)})", ""]
        lines += [_failure(s, c) for s, c in regressions[:LIMIT]] or ["none"]
        lines.append("")
        if fixed:
            lines += [f"Fixed since the baseline: {len(fixed)} "
                      f"({', '.join(md(n) for _, n in fixed[:10])})", ""]
    unknown_bad = [(s, c) for s, c in bad if (c.classname, c.name) not in known]
    if unknown_bad:
        lines += [f"## Failures and errors ({len(unknown_bad)})", ""]
        lines += [_failure(s, c) for s, c in unknown_bad[:LIMIT]]
        if len(unknown_bad) > LIMIT:
            lines.append(f"- … and {len(unknown_bad) - LIMIT} more (see junit.xml)")
        lines.append("")
    covered = [(s, c) for s, c in bad if (c.classname, c.name) in known]
    if covered:
        lines += [f"## Known failures ({len(covered)}, not gating)", ""]
        lines += [f"- **{md(s.name)}** › {md(c.name)}: {md(known[(c.classname, c.name)])}"
                  for s, c in covered[:LIMIT]]
        lines.append("")
    lines += warning_lines(suites)
    flaky = [(s, c) for s in suites for c in s.cases if c.flaky]
    if flaky:
        lines += [f"## Flaky ({len(flaky)}: passed on a retry)", ""]
        lines += [f"- **{md(s.name)}** › {md(c.name)}" for s, c in flaky[:LIMIT]]
        lines.append("")
    lines += series_lines(series)
    shown = [f"**{md(k)}** {_code(v)}" for k, v in facts.items() if v]
    shown += [f"[{md(label)}]({path.replace(' ', '%20')})" for label, path in links]
    if shown:
        lines += ["## Environment", "", " · ".join(shown), ""]
    cells = any(s.cell for s in suites)
    lines += ["## Stages", "",
              "| cell " * cells + "| host | stage | status | cases | time |",
              "| --- " * cells + "| --- | --- | --- | --- | --- |"]
    for s in suites:
        c = counts([s])
        took = f"{s.seconds:.1f} s" if s.seconds > 0 else ""
        lines.append(f"| {md(s.cell)} " * cells + f"| {md(s.host)} | {md(s.stage)} | "
                     f"{ICON[s.status]} {s.status} | {c[Status.PASS]}/{len(s.cases)} | "
                     f"{took} |")
    lines.append("")
    for note in notes or []:
        lines += [f"> {md(note)}", ""]
    return "\n".join(lines)
