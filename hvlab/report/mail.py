"""report.mail: a run's findings as replies to the patches, in the 0-day robot's
layout (what was tested, the findings per patch with file:line, how to
reproduce).  Pure: records and JUnit views in, mail messages out.

One mail per patch with a failing or warning case (a reply to that patch's
Message-Id); the series' own failures (the build, a boot, a suite) in one
mail answering the cover letter (or the last patch); when nothing was found,
one mail answering the cover letter that says so.
"""

from __future__ import annotations

import email.policy
import email.utils
import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from email.message import EmailMessage

from hvlab.report.seriesrecord import PatchRecord, SeriesRecord
from hvlab.report.view import CaseView, SuiteView
from hvlab.results import Status

POLICY = email.policy.default.clone(max_line_length=998)  # LF: .eml on disk
PER_PATCH = ("patch", "check")  # the stages whose cases name a patch
COMMANDS = {
    "checkpatch": "perl scripts/checkpatch.pl {args} <the patch>",
    "sparse": "make O=<build dir> ARCH={arch} C=2 {objects}",
    "W=1": "make O=<build dir> ARCH={arch} W=1 {objects}",
    "kernel-doc": "perl scripts/kernel-doc -none {files}",
    "fixes": "git log -1 --format=%s <the sha of each Fixes: tag>",
    "get_maintainer": "perl scripts/get_maintainer.pl --no-git --no-rolestats <the patch>",
}


@dataclass(frozen=True)
class Finding:
    check: str  # "checkpatch", "sparse", ..., "apply", or the stage for the series
    failed: bool  # False: a warning the profile lets pass
    lines: tuple[str, ...]  # file:line: message, as the case said


@dataclass(frozen=True)
class Tested:
    """What the reader needs to know was tested, from the run's facts."""

    run_id: str
    command: str
    facts: Mapping[str, str]  # the cell's (commit, base_commit, build_id, checks, ...)
    compiler: str = ""
    arch: str = "x86_64"
    report: str = ""  # where the report is (a path or URL)


def _lines(c: CaseView) -> tuple[str, ...]:
    """The findings of a case: its output's finding lines when it has them."""
    found = [line.strip() for line in c.output.splitlines()
             if line.startswith(("ERROR:", "WARNING:", "CHECK:", "#")) or ": " in line
             and line.split(":", 1)[0].endswith((".c", ".h", ".S"))]
    said = c.message.removeprefix("warning: ")
    if said and not any(said in f for f in found):
        found.insert(0, said)
    return tuple(found or [said])


def patch_cases(patch: PatchRecord, suites: Sequence[SuiteView]
                ) -> Iterator[tuple[str, CaseView]]:
    """(check, case) of the cases about ``patch``: ``<subject>`` (applied: "apply")
    and ``<check>: <subject>`` in the patch and check stages."""
    for suite in suites:
        if suite.stage not in PER_PATCH:
            continue
        for c in suite.cases:
            check, _, subject = c.name.partition(": ")
            if c.name == patch.subject:
                yield "apply", c
            elif subject == patch.subject:
                yield check, c


def findings_of(patch: PatchRecord, suites: Sequence[SuiteView]) -> list[Finding]:
    out = []
    for check, c in patch_cases(patch, suites):
        if c.status in (Status.FAIL, Status.ERROR):
            out.append(Finding(check, True, _lines(c)))
        elif c.warned:
            out.append(Finding(check, False, _lines(c)))
    return out


def series_findings(record: SeriesRecord, suites: Sequence[SuiteView]) -> list[Finding]:
    """Failures of the stages that tested the whole series (build, boot, suites)."""
    out = []
    for suite in suites:
        if suite.stage in PER_PATCH or suite.stage in ("fetch", "configure"):
            continue
        bad = [c for c in suite.cases if c.status in (Status.FAIL, Status.ERROR)]
        for c in bad:
            out.append(Finding(f"{suite.stage}: {c.name}", True, (c.message or c.name,)))
    return out


def _name(author: str) -> str:
    name, addr = email.utils.parseaddr(author)
    return name or addr or "there"


def _header(record: SeriesRecord, tested: Tested, msgid: str) -> list[str]:
    f = tested.facts
    lines = [f"tree:     {record.kernel} ({record.url or record.arg})"
             if not record.by_mail else f"tree:     {record.kernel}",
             f"base:     {record.base}",
             f"head:     {record.commit} (series {record.series})"]
    if record.by_mail:
        lines.append(f"thread:   {record.url.removesuffix('t.mbox.gz')}")
    if msgid:
        lines.append(f"patch:    <{msgid}>")
    if f.get("build_id"):
        lines.append(f"config:   {tested.arch}, kernels/builds/{f['build_id'][:16]}.../config")
    if tested.compiler:
        lines.append(f"compiler: {tested.compiler}")
    if f.get("checks"):
        lines.append(f"checks:   profile {f['checks']}")
    return lines


def _reproduce(record: SeriesRecord, tested: Tested, commit: str,
               found: Sequence[Finding]) -> list[str]:
    lines = ["reproduce:", f"    {tested.command}"]
    if commit:
        lines.append(f"    # or by hand, in the kernel tree at {commit[:12]}:")
        lines.append(f"    git checkout {commit}")
    for check in dict.fromkeys(f.check for f in found):
        command = COMMANDS.get(check)
        if command:
            files = sorted({ln.split(":", 1)[0] for f in found if f.check == check
                            for ln in f.lines if ln.split(":", 1)[0].endswith((".c", ".h"))})
            lines.append("    " + command.format(
                args="--strict" if tested.facts.get("checks") == "netdev" else "",
                arch=tested.arch, files=" ".join(files) or "<file>",
                objects=" ".join(f[:-2] + ".o" for f in files if f.endswith(".c"))
                or "<file>.o").replace("  ", " "))
    return lines


def _body(greeting: str, intro: str, header: list[str], found: Sequence[Finding],
          reproduce: list[str], tested: Tested) -> str:
    parts = [f"Hi {greeting},", "", intro, "", *header, ""]
    if found:
        parts += [">> a finding that fails the patch, ?? a warning the profile lets pass", ""]
        for f in found:
            parts.append(f"{f.check}:")
            parts += [f"{'>>' if f.failed else '??'} {line}" for line in f.lines]
            parts.append("")
    parts += reproduce
    parts += ["", "-- ", f"hvlab run {tested.run_id}" +
              (f": {tested.report}" if tested.report else "")]
    return "\n".join(parts) + "\n"


def _message(sender: str, to: str, cc: Sequence[str], subject: str, reply_to: str,
             body: str, seed: str) -> EmailMessage:
    msg = EmailMessage(policy=POLICY)
    msg["From"] = sender
    msg["To"] = to
    others = [a for a in dict.fromkeys(cc) if a and a.lower() not in to.lower()]
    if others:
        msg["Cc"] = ", ".join(others)
    msg["Subject"] = subject if subject.lower().startswith("re:") else f"Re: {subject}"
    if reply_to:
        msg["In-Reply-To"] = f"<{reply_to}>"
        msg["References"] = f"<{reply_to}>"
    domain = sender.rsplit("@", 1)[-1].strip("> ") or "hvlab.invalid"
    msg["Message-Id"] = f"<hvlab-{hashlib.sha256(seed.encode()).hexdigest()[:24]}@{domain}>"
    msg["X-Mailer"] = "hvlab report.mail"
    # plain text as the lists want it: no quoted-printable
    msg.set_content(body, cte="7bit" if body.isascii() else "8bit")
    return msg


def compose(record: SeriesRecord, suites: Sequence[SuiteView], tested: Tested,
            sender: str) -> list[EmailMessage]:
    """The replies for one series of a run."""
    mails = []
    for p in record.patches:
        found = findings_of(p, suites)
        if not found:
            continue
        failed = any(f.failed for f in found)
        checks = ", ".join(dict.fromkeys(f.check for f in found))
        intro = (f"hvlab checked this patch on {record.kernel} and found "
                 f"{'problems' if failed else 'warnings'} ({checks}).")
        body = _body(_name(p.author), intro, _header(record, tested, p.msgid), found,
                     _reproduce(record, tested, p.commit, found), tested)
        mails.append(_message(sender, p.author or "", p.recipients, p.mail_subject or p.subject,
                              p.msgid, body, f"{tested.run_id}/{record.cell}/{p.index}"))
    whole = series_findings(record, suites)
    if whole or not mails:
        last = record.patches[-1] if record.patches else None
        author = last.author if last else ""
        subject = record.cover_subject or (last.mail_subject or last.subject if last else
                                           record.series)
        reply = record.cover_msgid or (last.msgid if last else "")
        intro = (f"hvlab built and tested this series on {record.kernel}; "
                 + ("these failed:" if whole else "every check and test passed."))
        body = _body(_name(author), intro, _header(record, tested, reply), whole,
                     _reproduce(record, tested, record.commit, whole), tested)
        mails.append(_message(sender, author, last.recipients if last else (), subject, reply,
                              body, f"{tested.run_id}/{record.cell}/series"))
    return mails
