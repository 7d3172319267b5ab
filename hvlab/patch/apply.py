"""The patch stage: apply a series with ``git am -3``, one JUnit case per patch.

A failing patch's case names the conflicting files and carries the ``git am``
output; later patches are SKIPPED; the worktree is never left mid-apply.
Results are cached by (base commit, patchset hash, checkpatch on/off).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from hvlab.checks.profiles import Profile
from hvlab.fetch.source import checkout, restore_clean, store_lock, worktree_path
from hvlab.git import IDENTITY, Git
from hvlab.patch import checkpatch
from hvlab.patch.discover import LoadedSeries
from hvlab.patch.series import Patch
from hvlab.progress import Progress
from hvlab.results import StageResult, Status, TestCase
from hvlab.workspace import Workspace

_CONFLICT_PATTERNS = (
    re.compile(r"^CONFLICT \([^)]*\): Merge conflict in (\S+)", re.M),
    re.compile(r"^error: patch failed: (\S+?):\d+", re.M),
    re.compile(r"^error: (\S+): patch does not apply", re.M),
    re.compile(r"^error: (\S+): does not exist in index", re.M),
    re.compile(r"^error: (\S+): already exists in (?:index|working directory)", re.M),
)


# the lines of git am's output that say why a patch did not apply
AM_SAYS = ("Applying: ", "error: ", "CONFLICT ", "Patch failed at ", "fatal: ")


def conflicting_files(output: str) -> list[str]:
    """Files named by git am/apply as failing, in order, without duplicates."""
    found: list[tuple[int, str]] = []
    for pattern in _CONFLICT_PATTERNS:
        found += [(m.start(), m.group(1)) for m in pattern.finditer(output)]
    out: list[str] = []
    for _, name in sorted(found):
        if name not in out:
            out.append(name)
    return out


@dataclass(frozen=True)
class Patched:
    tree: Path
    base: str
    commit: str
    patchset_hash: str
    applied: int
    cached: bool

    @property
    def facts(self) -> dict[str, str]:
        return {"commit": self.commit, "base_commit": self.base,
                "patchset_hash": self.patchset_hash}


def _cache_key(base: str, series: LoadedSeries, checkpatch_profile: Profile | None) -> str:
    profile = checkpatch_profile.name if checkpatch_profile else "no checkpatch"
    text = f"{base}\n{series.patchset_hash}\n{profile}\n"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _case_to_json(c: TestCase) -> dict[str, object]:
    return {"name": c.name, "status": c.status.value, "message": c.message,
            "output": c.output, "duration": c.duration}


def _case_from_json(d: dict[str, object]) -> TestCase:
    return TestCase(str(d["name"]), Status(str(d["status"])), str(d["message"]), str(d["output"]),
                    float(str(d["duration"])))


# how a mail is applied, alone or with the rest of its series (the same commits)
GIT_AM = ("am", "-3", "--committer-date-is-author-date", "--keep-cr")


def _apply_one(g: Git, patch: Patch, file: Path, base_date: str, log: Path) -> tuple[bool, str]:
    with log.open("a") as fh:
        fh.write(f"\n=== [{patch.index}] {patch.subject} ({patch.source})\n")
    if patch.kind == "mail":
        code, out, err = g.run(*GIT_AM, str(file), env=IDENTITY, check=False)
        text = (out + err).strip()
        if code != 0:
            g.run("am", "--abort", check=False)
    else:
        code, out, err = g.run("apply", "--index", "--whitespace=nowarn", str(file),
                               check=False)
        text = (out + err).strip()
        if code == 0:
            env = {**IDENTITY, "GIT_AUTHOR_DATE": base_date, "GIT_COMMITTER_DATE": base_date}
            c2, o2, e2 = g.run("commit", "--quiet", "--no-verify", "-m", patch.subject, "-m",
                               f"Applied by hvlab from {patch.source}.", env=env, check=False)
            text = (text + "\n" + o2 + e2).strip()
            code = c2
        if code != 0:
            g.run("reset", "--quiet", "--hard", "HEAD", check=False)
    with log.open("a") as fh:
        fh.write(text + "\n")
    return code == 0, text


def apply_series(ws: Workspace, kernel: str, base: str, series: LoadedSeries,
                 checkpatch_profile: Profile | None, log: Path, progress: Progress,
                 materialize: bool = True) -> tuple[Patched, StageResult]:
    """Apply ``series`` on ``base`` in the kernel's worktree (caller holds its lock).

    A cached result only checks the worktree out when ``materialize`` is set
    (``inv patch``); a build checks out lazily, when make has to run."""
    t0 = time.monotonic()
    key = _cache_key(base, series, checkpatch_profile)
    record = ws.cache / "patch" / f"{key}.json"
    ref = f"refs/hvlab/patched/{key}"
    # the commits and the patchset hash travel in Patched.facts (the cell's properties)
    props = {"series": series.name, "patches": str(len(series.patches))}
    branch = f"hvlab/{kernel}/{series.name}"
    cached = _cached(ws, kernel, record, ref, branch, materialize, progress)
    if cached is not None:
        tree, commit, applied, cases = cached
        return (Patched(tree, base, commit, series.patchset_hash, applied, True),
                StageResult.from_cases("patch", cases, time.monotonic() - t0, log,
                                       properties=props, cached=True))
    tree = checkout(ws, kernel, base, progress)
    g = Git(work_tree=tree)
    # the tree is at base, detached: name it (a checkout -B would walk the index again)
    g.run("update-ref", f"refs/heads/{branch}", base)
    g.run("symbolic-ref", "HEAD", f"refs/heads/{branch}")
    applied, all_cases = _apply_all(g, tree, base, series, checkpatch_profile, log, progress)
    commit = g.rev("HEAD") or base
    if applied == len(series.patches):
        with store_lock(ws, progress):  # refs/hvlab/ is the store lock's
            Git(ws.store).run("update-ref", ref, commit)
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({"commit": commit, "applied": applied,
                                      "cases": [_case_to_json(c) for c in all_cases]}, indent=1))
    result = StageResult.from_cases("patch", all_cases, time.monotonic() - t0, log,
                                    properties=props)
    return Patched(tree, base, commit, series.patchset_hash, applied, False), result


def _cached(ws: Workspace, kernel: str, record: Path, ref: str, branch: str, materialize: bool,
            progress: Progress) -> tuple[Path, str, int, list[TestCase]] | None:
    """(tree, commit, patches applied, cases) of this series on this base, if recorded."""
    if not record.is_file():
        return None
    commit = Git(ws.store).rev(ref)
    if not commit:
        return None
    data = json.loads(record.read_text())
    tree = worktree_path(ws, kernel)
    if materialize:
        tree = checkout(ws, kernel, commit, progress)
        Git(work_tree=tree).run("checkout", "--quiet", "-B", branch, commit)
    return tree, commit, int(data["applied"]), [_case_from_json(d) for d in data["cases"]]


def _apply_all(g: Git, tree: Path, base: str, series: LoadedSeries,
               checkpatch_profile: Profile | None, log: Path, progress: Progress
               ) -> tuple[int, list[TestCase]]:
    """The series in one git am, else each patch in turn (after a failure the rest
    are SKIPPED), then each one's checkpatch case; a series that did not apply
    whole leaves the tree clean."""
    base_date = g.out("log", "-1", "--format=@%ct +0000", base)
    cases: list[TestCase] = []
    check_cases: list[TestCase] = []
    to_check: list[tuple[Patch, Path]] = []
    failed: Patch | None = None
    applied = 0
    try:
        with tempfile.TemporaryDirectory(prefix="hvlab-patch-") as tmp:
            # named after their sources so checkpatch and git name them recognisably
            files = [Path(tmp) / f"{p.index:04d}-{Path(p.source).name}" for p in series.patches]
            for patch, file in zip(series.patches, files, strict=True):
                file.write_bytes(patch.data)
            batch = _apply_batch(g, series, files, log, progress)
            for i, (patch, file) in enumerate(zip(series.patches, files, strict=True)):
                if batch is not None:
                    cases.append(batch[i])
                    applied += 1
                elif failed is not None:
                    cases.append(TestCase(patch.subject, Status.SKIP,
                                          f"not applied: patch {failed.index} "
                                          f"'{failed.subject}' failed before it"))
                else:
                    progress.stage("patch", f"[{patch.index}/{len(series.patches)}] "
                                   f"{patch.subject}")
                    case = _apply_case(g, patch, file, base_date, log)
                    cases.append(case)
                    if case.status is Status.PASS:
                        applied += 1
                    else:
                        failed = patch
                to_check.append((patch, file))
            if checkpatch_profile is not None:
                check_cases = _checkpatch_all(tree, to_check, checkpatch_profile, log)
    finally:
        if applied < len(series.patches):
            restore_clean(tree)
    return applied, cases + check_cases


def _apply_batch(g: Git, series: LoadedSeries, files: list[Path], log: Path,
                 progress: Progress) -> list[TestCase] | None:
    """A mailed series in one ``git am`` (the same commits as one call per patch,
    without walking the kernel's index for each): a PASS case per patch, or
    None, the tree back on its base, when any patch did not apply, so that
    they are applied one by one and the failing one is named."""
    patches = series.patches
    if len(patches) < 2 or any(p.kind != "mail" for p in patches):
        return None
    progress.stage("patch", f"[1-{len(patches)}/{len(patches)}] in one git am")
    t0 = time.monotonic()
    code, out, err = g.run(*GIT_AM, *map(str, files), env=IDENTITY, check=False)
    text = (out + err).strip()
    with log.open("a") as fh:
        fh.write(f"\n=== [1-{len(patches)}] git am of the whole series\n{text}\n")
    if code != 0:
        g.run("am", "--abort", check=False)
        with log.open("a") as fh:
            fh.write("(the series did not apply whole: one patch at a time)\n")
        return None
    took = (time.monotonic() - t0) / len(patches)
    applying = [line for line in text.splitlines() if line.startswith("Applying: ")]
    return [TestCase(p.subject, Status.PASS, output=applying[i] if i < len(applying) else text,
                     duration=took, log_path=log) for i, p in enumerate(patches)]


def _apply_case(g: Git, patch: Patch, file: Path, base_date: str, log: Path) -> TestCase:
    t0 = time.monotonic()
    ok, text = _apply_one(g, patch, file, base_date, log)
    if ok:
        return TestCase(patch.subject, Status.PASS, output=text,
                        duration=time.monotonic() - t0, log_path=log)
    files = conflicting_files(text) or list(patch.files)
    msg = (f"patch {patch.index} ({patch.source}) does not apply: "
           f"conflicts in {', '.join(files) or 'unknown files'}")
    said = [line for line in text.splitlines() if line.startswith(AM_SAYS)]
    return TestCase(patch.subject, Status.FAIL, msg, output=text,
                    duration=time.monotonic() - t0, log_path=log,
                    evidence="\n".join([msg, *said]))


def _checkpatch_all(tree: Path, items: list[tuple[Patch, Path]], profile: Profile,
                    log: Path) -> list[TestCase]:
    """checkpatch on every patch file, as many at once as there are cores (it
    reads the patch and the tree's scripts, never the applied state); each
    writes a log of its own, appended to ``log`` in the series' order."""
    if not items:
        return []
    logs = [log.with_name(f".{log.name}.checkpatch-{i}") for i in range(len(items))]
    try:
        with ThreadPoolExecutor(max_workers=min(len(items), os.cpu_count() or 1)) as pool:
            futures = [pool.submit(_checkpatch_case, tree, patch, file, profile, own)
                       for (patch, file), own in zip(items, logs, strict=True)]
            cases = [f.result() for f in futures]
    finally:
        with log.open("a") as out:
            for own in logs:
                if own.is_file():
                    out.write(own.read_text(errors="backslashreplace"))
                    own.unlink()
    return [dataclasses.replace(c, log_path=log) for c in cases]


def _checkpatch_case(tree: Path, patch: Patch, file: Path, profile: Profile,
                     log: Path) -> TestCase:
    t0 = time.monotonic()
    report, output = checkpatch.check(tree, file, patch.kind == "diff", log,
                                      profile.checkpatch_args)
    name = f"checkpatch: {patch.subject}"
    duration = time.monotonic() - t0
    if not report.parsed:
        return TestCase(name, Status.ERROR, "checkpatch.pl did not finish (no total line)",
                        output=output, duration=duration, log_path=log)
    summary = (f"{report.errors} errors, {report.warnings} warnings, {report.checks} checks "
               f"(profile {profile.name})")
    failing = [f for f in report.findings if f.split(":", 1)[0] in profile.checkpatch_fails_on]
    if report.errors or failing:
        first = failing[0] if failing else next(
            (f for f in report.findings if f.startswith("ERROR")), "")
        return TestCase(name, Status.FAIL, f"{summary}; {first}", output=output,
                        duration=duration, log_path=log,
                        evidence="\n".join([*failing, *(f for f in report.findings
                                                         if f.startswith("ERROR")
                                                         and f not in failing)]))
    noted = report.warnings or report.checks
    return TestCase(name, Status.PASS, f"warning: {summary}" if noted else "", output=output,
                    duration=duration, log_path=log)
