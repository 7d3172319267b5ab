"""Report tasks: import a KTAP/TAP/JUnit file, merge runs or CI shards, compare
with a baseline run (regressions, fixed, ..., known failures, gating)."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import smtplib
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

from defusedxml import DefusedXmlException

from hvlab.errors import InfraError, UserError
from hvlab.report import compare, junit, mail, patchwork, seriesrecord, view
from hvlab.results import StageResult, Status, TestCase
from hvlab.suites import ktap
from hvlab.suites.ktapcases import cases_by_suite
from hvlab.tasks.session import Gate, Scope, Session


def import_file(s: Session, fmt: str, path: Path) -> None:
    if fmt not in ("ktap", "tap", "junit"):
        raise UserError(f"--format {fmt}: expected ktap, tap or junit")
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    s.progress.stage("import", f"{fmt} {path}")
    if fmt == "junit":
        _add_junit(s, path)
        return
    with path.open("rb") as fh:
        doc = ktap.parse(ktap.text_lines(fh))
    groups = cases_by_suite(doc)
    if not groups:
        groups = [("", [TestCase(path.name, Status.ERROR, f"no {fmt.upper()} results in "
                                 f"{path}")])]
    counts = doc.counts()
    s.run.info["source"] = str(path)
    for suite, cases in groups:  # one testsuite per KTAP suite
        tally = {st: sum(c.status is st for c in cases) for st in Status}
        s.run.add(StageResult.from_cases(f"{path.stem}:{suite}" if suite else path.stem, cases,
                                         0.0, properties={
            "format": doc.version or fmt, **{k: str(v) for k, v in tally.items()}}),
            "-", "import")
    s.progress.info(f"{path.name}: {counts[Status.PASS]} passed, {counts[Status.FAIL]} failed, "
                    f"{counts[Status.SKIP]} skipped, {counts[Status.ERROR]} errors")


def _junit_file(place: Path) -> Path:
    f = place / "junit.xml" if place.is_dir() else place
    if not f.is_file():
        raise UserError(f"{place}: no junit.xml (a run folder, a CI shard output or a "
                        "JUnit file)")
    return f


def _read(place: Path) -> list[view.SuiteView]:
    f = _junit_file(place)
    try:
        return view.parse(f.read_text(encoding="utf-8", errors="replace"))
    except ET.ParseError as exc:
        raise UserError(f"{f}: not valid XML: {exc}") from None
    except DefusedXmlException as exc:
        raise UserError(f"{f}: refused: {exc} (entities and DTDs are not read)") from None


def _add_suites(s: Session, suites: list[view.SuiteView], origin: str,
                logs: Callable[[str], str] | None = None) -> None:
    """Record another report's suites; ``logs`` maps a case's log path as that
    report gave it to the path in this run folder."""
    for suite in suites:
        kernel = suite.cell or next((c.classname.split(".")[0] for c in suite.cases
                                     if c.classname), "-")
        own = junit.classname(kernel, suite.host, suite.stage)  # what hvlab would write
        cases = [TestCase(c.name, c.status, c.message, c.output, c.seconds,
                          Path(logs(c.log) if logs else c.log) if c.log else None,
                          flaky=c.flaky,
                          evidence=c.evidence if c.evidence != c.message else "",
                          classname=c.classname if c.classname != own else "",
                          failure_type=c.outcome_type if c.outcome_type not in (
                              "failure", "error") else "")
                 for c in suite.cases]
        props = {k: v for k, v in suite.properties.items() if k != "flaky"}
        props.setdefault("origin", origin)
        s.run.add(StageResult.from_cases(suite.stage, cases, suite.seconds, properties=props),
                  kernel, suite.host, timestamp=suite.timestamp)


def _add_junit(s: Session, path: Path) -> None:
    _add_suites(s, _read(path), str(path), _copy_logs(s, path))


def merge(s: Session, places: list[Path]) -> None:
    if not places:
        raise UserError("report.merge needs at least one run folder or junit.xml")
    for place in places:
        suites = _read(place)
        s.progress.info(f"{place}: {len(suites)} suites")
        _add_suites(s, suites, str(place), _copy_logs(s, place))


def _copy_logs(s: Session, place: Path) -> Callable[[str], str]:
    """The evidence goes with the merge: ``place``'s logs/ is linked (or copied)
    to logs/<its folder's name>/ of this run, so the merged junit.xml and
    report.html point at files inside the folder CI publishes."""
    folder = (place if place.is_dir() else place.parent).resolve()
    where = f"logs/{folder.name}"
    source = folder / "logs"
    if source.is_dir():
        shutil.copytree(source, s.run.path / where, copy_function=_link_or_copy,
                        dirs_exist_ok=True)

    def moved(log: str) -> str:
        path = Path(log)
        inside = path.relative_to(folder) if path.is_absolute() and \
            path.is_relative_to(folder) else path
        if inside.is_absolute() or not inside.parts or inside.parts[0] != "logs":
            return log  # not one of its logs: left as it was
        return str(Path(where, *inside.parts[1:]))

    return moved


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _latest(s: Session) -> Path:
    latest = s.ws.reports / "latest"
    if not latest.exists():
        raise UserError("no run to compare: reports/latest does not exist (give --run)")
    return Path(os.path.realpath(latest))


def _which(path: Path) -> str:
    """A run as the compare line names it: its folder, and its task and start
    when it is a run folder (reports/latest resolved to the run it points at)."""
    folder = path.parent if path.is_file() else path
    try:
        meta = json.loads((folder / "metadata.json").read_text())
        return f"{path} (inv {meta['task']}, started {meta['started']})"
    except (OSError, ValueError, KeyError, TypeError):
        return str(path)


def compare_runs(s: Session, baseline: Path, current: Path | None, gate_mode: str) -> None:
    Gate.parse(gate_mode)
    run_dir = current or _latest(s)
    s.progress.info(f"comparing {_which(run_dir)} with the baseline {_which(baseline)}")
    now_xml = _junit_file(run_dir).read_text(encoding="utf-8", errors="replace")
    base_xml = _junit_file(baseline).read_text(encoding="utf-8", errors="replace")
    now, before = compare.read_junit(now_xml), compare.read_junit(base_xml)
    classes = compare.classify(now, before)
    entries = s.config.known_failures if (s.ws.configs / "known-failures.yaml").is_file() \
        else []
    outcome = compare.apply_known(now, entries, dt.date.today())
    for e in outcome.expired:
        s.progress.info(f"known failure '{e.pattern}' expired on {e.expires}: it gates again")
    for e in outcome.stale:
        if any(e.matches(k) for k in now):
            s.progress.info(f"known failure '{e.pattern}' ran and passed: remove it?")
    known = {k: e.reason for k, e in outcome.known.items()}
    _add_suites(s, view.parse(now_xml), str(run_dir), _copy_logs(s, run_dir))
    s.run.info.update(baseline=str(baseline), compared=str(run_dir))
    tally: dict[str, int] = {}
    for k, c in classes.items():
        label = compare.KNOWN if k in known else c
        tally[label] = tally.get(label, 0) + 1
    s.progress.info("compared with the baseline: " + ", ".join(
        f"{n} {c}" for c, n in sorted(tally.items())))
    (s.run.path / "compare.json").write_text(json.dumps({
        "baseline": str(baseline), "run": str(run_dir), "gate": gate_mode, "counts": tally,
        "cases": [{"classname": k[0], "name": k[1], "class": c, "known": known.get(k)}
                  for k, c in sorted(classes.items())]}, indent=1))
    s.gate = Gate.parse(gate_mode)  # decided at the end of the task, with known failures
    s.run.classes = classes


def _run_facts(run_dir: Path) -> dict[str, object]:
    path = run_dir / "metadata.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not a run folder's metadata ({exc})") from None
    return data if isinstance(data, dict) else {}


def _answered(s: Session, run: Path | None) -> tuple[Path, list[seriesrecord.SeriesRecord],
                                                     list[view.SuiteView], dict[str, object]]:
    run_dir = (run or _latest(s)).resolve()
    records = seriesrecord.read(run_dir)
    if not records:
        raise UserError(f"{run_dir}: the run applied no series (no series/ records): "
                        "nothing to answer")
    return run_dir, records, _read(run_dir), _run_facts(run_dir)


def _cell_suites(record: seriesrecord.SeriesRecord, suites: list[view.SuiteView],
                 single: bool) -> list[view.SuiteView]:
    return [x for x in suites if x.cell == record.cell or (single and not x.cell)]


def _cell_facts(meta: dict[str, object], record: seriesrecord.SeriesRecord) -> dict[str, str]:
    facts: dict[str, str] = {}
    cells = meta.get("cells")
    for cell in cells if isinstance(cells, list) else []:
        if isinstance(cell, dict) and cell.get("label") == record.cell:
            facts.update({str(k): str(v) for k, v in (cell.get("facts") or {}).items()})
    return facts


def _tested(s: Session, run_dir: Path, meta: dict[str, object], facts: dict[str, str],
            report_url: str) -> mail.Tested:
    compiler, arch = "", "x86_64"
    build = s.ws.builds / facts.get("build_id", "-") / "metadata.json"
    if facts.get("build_id") and build.is_file():
        data = json.loads(build.read_text())
        compiler = str(data.get("toolchain", {}).get("version", ""))
        arch = str(data.get("arch", arch))
    where = f"{report_url.rstrip('/')}/{run_dir.name}/report.html" if report_url \
        else str(run_dir / "report.html")
    return mail.Tested(str(meta.get("run_id", run_dir.name)), str(meta.get("command", "")),
                       facts, compiler, arch, where)


def report_mail(s: Session, run: Path | None, send: bool, sender: str, report_url: str) -> None:
    run_dir, records, suites, meta = _answered(s, run)
    sender = sender or os.environ.get("HVLAB_MAIL_FROM", "")
    if not sender or "@" not in sender:
        raise UserError("report.mail needs a sender: --sender 'Name <address>' or "
                        "HVLAB_MAIL_FROM")
    smtp = smtp_settings() if send else None
    folder = s.run.path / "mail"
    folder.mkdir(exist_ok=True)
    cases = []
    n = 0
    for record in records:
        facts = _cell_facts(meta, record)
        tested = _tested(s, run_dir, meta, facts, report_url)
        for msg in mail.compose(record, _cell_suites(record, suites, len(records) == 1),
                                tested, sender):
            n += 1
            path = folder / f"{n:02d}.eml"
            path.write_bytes(bytes(msg))
            said = f"{path}\nTo: {msg['To']}\nIn-Reply-To: {msg['In-Reply-To'] or '-'}\n"
            if smtp is not None:
                smtp.send(msg)
                said += f"sent through {smtp.host}:{smtp.port}\n"
            s.progress.info(f"mail {path.name}: {msg['Subject']}" + (" (sent)" if smtp else ""))
            cases.append(TestCase(f"mail: {msg['Subject']}", Status.PASS, output=said))
    s.record(StageResult.from_cases("mail", cases, 0.0, properties={
        "mails": str(n), "sent": "yes" if send else "no", "from": str(run_dir)}), Scope("-"))


def report_patchwork(s: Session, run: Path | None, url: str, report_url: str) -> None:
    token = os.environ.get("HVLAB_PATCHWORK_TOKEN", "")
    if not url:
        raise UserError("report.patchwork needs --url (patchwork's web address)")
    if not token:
        raise UserError("report.patchwork needs HVLAB_PATCHWORK_TOKEN (an API token of a "
                        "patchwork user allowed to add checks)")
    client = patchwork.Client(url, token)
    run_dir, records, suites, _meta = _answered(s, run)
    target = f"{report_url.rstrip('/')}/{run_dir.name}/report.html" if report_url else ""
    cases, posted, unknown = [], 0, 0
    for record in records:
        mine = _cell_suites(record, suites, len(records) == 1)
        whole = patchwork.series_checks(record, mine)
        for p in record.patches:
            name = f"patchwork: {p.subject}"
            if not p.msgid:
                cases.append(TestCase(name, Status.SKIP, "the patch has no Message-Id (it did "
                                      "not come by mail)"))
                continue
            pid = client.find_patch(p.msgid)
            if pid is None:
                unknown += 1
                cases.append(TestCase(name, Status.SKIP, f"{url} has no patch with Message-Id "
                                      f"<{p.msgid}>"))
                continue
            checks = patchwork.patch_checks(p, mine) + (whole if p is record.patches[-1] else [])
            for check in checks:
                client.post(pid, check, target)
            posted += len(checks)
            s.progress.info(f"patch {pid}: {len(checks)} checks ({p.subject})")
            cases.append(TestCase(name, Status.PASS, output="".join(
                f"{c.context}: {c.state}: {c.description}\n" for c in checks)))
    if posted == 0 and unknown:
        raise UserError(f"{url}: none of the run's patches is known there (by Message-Id)")
    s.record(StageResult.from_cases("patchwork", cases, 0.0, properties={
        "checks": str(posted), "url": url, "from": str(run_dir)}), Scope("-"))


@dataclass(frozen=True)
class Smtp:
    host: str
    port: int
    starttls: bool
    user: str

    def send(self, msg: EmailMessage) -> None:
        password = os.environ.get("HVLAB_SMTP_PASSWORD", "")
        try:
            with smtplib.SMTP(self.host, self.port, timeout=60) as client:
                if self.starttls:
                    client.starttls()
                if self.user:
                    client.login(self.user, password)
                client.send_message(msg)
        except smtplib.SMTPAuthenticationError:
            raise UserError(f"SMTP {self.host}:{self.port} refused the login of "
                            f"{self.user} (HVLAB_SMTP_USER, HVLAB_SMTP_PASSWORD)") from None
        except smtplib.SMTPRecipientsRefused as exc:
            raise UserError(f"SMTP {self.host}:{self.port} refused the recipients "
                            f"{', '.join(exc.recipients)}") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise InfraError(f"SMTP {self.host}:{self.port}: {exc}") from None


def smtp_settings() -> Smtp:
    host = os.environ.get("HVLAB_SMTP_HOST", "")
    if not host:
        raise UserError("report.mail --send needs HVLAB_SMTP_HOST (and HVLAB_SMTP_PORT, "
                        "HVLAB_SMTP_STARTTLS=1, HVLAB_SMTP_USER, HVLAB_SMTP_PASSWORD as "
                        "the server wants)")
    port_text = os.environ.get("HVLAB_SMTP_PORT", "25")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise UserError(f"HVLAB_SMTP_PORT={port_text!r}: expected a port number")
    return Smtp(host, int(port_text), os.environ.get("HVLAB_SMTP_STARTTLS", "") == "1",
                os.environ.get("HVLAB_SMTP_USER", ""))
