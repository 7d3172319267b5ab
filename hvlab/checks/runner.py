"""The check stage: per patch, what the kernel's bots report, gated on what is
new against the tree before the patch.

Each patch's commit and its parent are checked out in turn in the kernel's
worktree (the caller holds its lock; the head is checked out again at the
end).  For the touched C files the build compiled, one ``make W=1 C=2
<file>.o`` per state in a build directory of its own beside the build's
(same .config; the build's objects stay as the build left them): the
compiler's W=1 diagnostics and sparse's.  kernel-doc runs on every touched
.c and .h.  A state's results are kept for the next patch, whose "before" is
the same commit.  Nothing else is compiled or read.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hvlab.build.builder import Builder
from hvlab.build.diagnostics import Diagnostic
from hvlab.checks import findings as F
from hvlab.checks.profiles import Profile
from hvlab.digest import sha256_text
from hvlab.fetch.source import checkout_commit
from hvlab.git import Git
from hvlab.model import GitSource, SeriesOrigin
from hvlab.proc import require_tool, run
from hvlab.results import Status, TestCase

FORMAT = "2"  # of the kept findings


@dataclass(frozen=True)
class PatchCommit:
    index: int
    commit: str
    parent: str
    subject: str
    files: tuple[str, ...]
    message: str
    author_email: str
    recipients: tuple[str, ...] = ()  # To/Cc of the mail it came in (lore)


@dataclass
class Checker:
    builder: Builder
    tree: Path
    store: Git
    profile: Profile
    log: Path
    has_history: bool
    say: Callable[[str], None] = lambda _m: None
    linked: frozenset[str] | None = None  # the build's objects (None: not recorded)
    _compiled: dict[tuple[str, str], F.CompileFindings] = field(default_factory=dict)
    _kdoc: dict[tuple[str, str], list[Diagnostic]] = field(default_factory=dict)

    @property
    def check_dir(self) -> Path:
        return self.builder.build_dir.with_name(self.builder.build_dir.name + "-check")

    # -- states ----------------------------------------------------------------
    def _built(self, files: Sequence[str]) -> list[str]:
        """Touched .c files the build compiled in this configuration: kbuild's
        record of what it linked, kept with the build (so a build answered from
        the cache after its build directory was cleaned still knows); for a
        build without that record, the objects in the build directory."""
        if self.linked is not None:
            return [f for f in files if f.endswith(".c") and f"{f[:-2]}.o" in self.linked]
        return [f for f in files if f.endswith(".c")
                and (self.builder.build_dir / f"{f[:-2]}.o").is_file()]

    def compile_state(self, commit: str, files: Sequence[str]) -> dict[str, F.CompileFindings]:
        out = {}
        for f in self._built(files):
            if (commit, f) not in self._compiled:
                cached = self._load("compile", commit, f)
                if cached is None:
                    found = self._compile(commit, f)
                    self._save("compile", commit, f, [*found.w1], [*found.sparse])
                else:
                    found = F.CompileFindings(tuple(cached[0]), tuple(cached[1]))
                self._compiled[(commit, f)] = found
            out[f] = self._compiled[(commit, f)]
        return out

    # -- the findings of a (commit, file) are kept: commits are reproducible -----
    def _record(self, what: str, commit: str, file: str) -> Path:
        key = sha256_text(FORMAT, what, self.builder.config_key, commit, file)
        return self.builder.ws.cache / "checks" / f"{key}.json"

    def _load(self, what: str, commit: str, file: str) -> list[list[Diagnostic]] | None:
        path = self._record(what, commit, file)
        try:
            data = json.loads(path.read_text())
            return [[Diagnostic(**d) for d in part] for part in data]
        except (OSError, ValueError, TypeError):
            return None

    def _save(self, what: str, commit: str, file: str, *parts: list[Diagnostic]) -> None:
        path = self._record(what, commit, file)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps([[dataclasses.asdict(d) for d in part] for part in parts]))
        os.replace(tmp, path)

    def _compile(self, commit: str, file: str) -> F.CompileFindings:
        checkout_commit(self.tree, commit)
        work = self.check_dir
        work.mkdir(parents=True, exist_ok=True)
        config = (self.builder.build_dir / ".config").read_text()
        dotconfig = work / ".config"
        if not dotconfig.is_file() or dotconfig.read_text() != config:
            dotconfig.write_text(config)
        obj = f"{file[:-2]}.o"
        (work / obj).unlink(missing_ok=True)  # compiled again: W=1 prints only then
        with self.log.open("a") as fh:
            fh.write(f"\n=== W=1 and sparse on {file} at {commit[:12]}\n")
        argv = self.builder.make_argv(self.tree, "-j1", "W=1", "C=2", obj, out=work)
        done = run(argv, env=self.builder.make_env(), log=self.log, timeout=1800)
        problem = done.machine_failure("check")
        if problem is not None:
            raise problem
        lines = done.output.splitlines()
        return F.split_w1_sparse(lines, [str(self.tree), str(work),
                                         os.path.relpath(self.tree, work)])

    def kernel_doc_state(self, commit: str, files: Sequence[str]) -> list[Diagnostic]:
        out: list[Diagnostic] = []
        for f in files:
            if not f.endswith((".c", ".h")):
                continue
            if (commit, f) not in self._kdoc:
                cached = self._load("kernel-doc", commit, f)
                if cached is not None:
                    self._kdoc[(commit, f)] = cached[0]
                    out += cached[0]
                    continue
                checkout_commit(self.tree, commit)
                found: list[Diagnostic] = []
                if (self.tree / f).is_file():
                    done = run(["perl", "scripts/kernel-doc", "-none", f], cwd=self.tree,
                               log=self.log, timeout=300)
                    found = F.kernel_doc(done.output.splitlines(), [str(self.tree)])
                self._save("kernel-doc", commit, f, found)
                self._kdoc[(commit, f)] = found
            out += self._kdoc[(commit, f)]
        return out

    # -- cases -----------------------------------------------------------------
    def _case(self, check: str, patch: PatchCommit, problems: list[str], took: float,
              output: str = "") -> TestCase:
        name = f"{check}: {patch.subject}"
        if not problems:
            return TestCase(name, Status.PASS, output=output, duration=took, log_path=self.log)
        text = "\n".join(problems)
        if self.profile.fails(check):
            return TestCase(name, Status.FAIL, problems[0] + (
                f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
                output=text, duration=took, log_path=self.log, evidence=text)
        return TestCase(name, Status.PASS, f"warning: {problems[0]}", output=text,
                        duration=took, log_path=self.log)

    def compile_cases(self, patch: PatchCommit) -> list[TestCase]:
        t0 = time.monotonic()
        built = self._built(patch.files)
        if not built:
            why = "no C file it touches is built in this configuration"
            return [TestCase(f"{c}: {patch.subject}", Status.SKIP, why, log_path=self.log)
                    for c in ("sparse", "W=1")]
        before = self.compile_state(patch.parent, built)
        after = self.compile_state(patch.commit, built)
        took = time.monotonic() - t0
        cases = []
        for check in ("sparse", "W=1"):
            def pick(c: F.CompileFindings, check: str = check) -> tuple[Diagnostic, ...]:
                return c.sparse if check == "sparse" else c.w1
            new = F.new_in([d for f in built for d in pick(after[f])],
                           [d for f in before for d in pick(before[f])], patch.files)
            cases.append(self._case(check, patch, [d.describe() for d in new], took / 2,
                                    output=f"checked: {', '.join(built)}\n"))
        return cases

    def kernel_doc_case(self, patch: PatchCommit) -> TestCase:
        t0 = time.monotonic()
        docs = [f for f in patch.files if f.endswith((".c", ".h"))]
        why = "it touches no .c or .h file" if not docs else \
            "" if (self.tree / "scripts" / "kernel-doc").is_file() else \
            "the tree has no scripts/kernel-doc"
        if why:
            return TestCase(f"kernel-doc: {patch.subject}", Status.SKIP, why, log_path=self.log)
        new = F.new_in(self.kernel_doc_state(patch.commit, docs),
                       self.kernel_doc_state(patch.parent, docs), docs)
        return self._case("kernel-doc", patch, [d.describe() for d in new],
                          time.monotonic() - t0, output=f"checked: {', '.join(docs)}\n")

    def fixes_case(self, patch: PatchCommit) -> TestCase:
        tags, malformed = F.fixes_tags(patch.message)
        name = f"fixes: {patch.subject}"
        if not tags and not malformed:
            return TestCase(name, Status.PASS, output="no Fixes: tag\n", log_path=self.log)
        problems = [f"'{line}' is not in the form Fixes: <12+ hex digits> (\"<subject>\")"
                    for line in malformed]
        if not self.has_history and tags:
            if not problems:
                return TestCase(name, Status.SKIP, "the kernel source has no history (a "
                                "tarball or path import): Fixes: tags cannot be checked",
                                log_path=self.log)
        for tag in tags if self.has_history else []:
            full = self.store.rev(tag.sha)
            if full is None:
                problems.append(f"{tag.line}: no commit {tag.sha} in the kernel's history")
                continue
            code, _, _ = self.store.run("merge-base", "--is-ancestor", full, patch.parent,
                                        check=False)
            if code != 0:
                problems.append(f"{tag.line}: {tag.sha} is not in the history the patch "
                                "applies on")
                continue
            subject = self.store.out("log", "-1", "--format=%s", full).strip()
            if subject != tag.subject:
                problems.append(f"{tag.line}: commit {tag.sha} is \"{subject}\"")
        return self._case("fixes", patch, problems, 0.0)

    def signoff_case(self, patch: PatchCommit, is_mail: bool) -> TestCase:
        name = f"signoff: {patch.subject}"
        if not is_mail:
            return TestCase(name, Status.SKIP, "a plain diff has no author to sign off",
                            log_path=self.log)
        if patch.author_email.lower() in F.signed_off_by(patch.message):
            return TestCase(name, Status.PASS, log_path=self.log)
        return self._case("signoff", patch, [
            f"no Signed-off-by: from the author <{patch.author_email}>"], 0.0)

    def maintainers_case(self, patch: PatchCommit, origin: SeriesOrigin | None) -> TestCase:
        name = f"get_maintainer: {patch.subject}"
        script = self.tree / "scripts" / "get_maintainer.pl"
        if origin is None or not origin.arg.startswith("lore:"):
            return TestCase(name, Status.SKIP, "the patch did not come by mail",
                            log_path=self.log)
        if not script.is_file():
            return TestCase(name, Status.SKIP, "the tree has no scripts/get_maintainer.pl",
                            log_path=self.log)
        checkout_commit(self.tree, patch.commit)
        mail = self.store.out("format-patch", "-1", "--stdout", patch.commit)
        done = run(["perl", str(script), "--no-git", "--no-git-fallback", "--no-rolestats",
                    "--no-multiline"], cwd=self.tree, stdin_data=mail.encode(),
                   log=self.log, timeout=300)
        wanted = F.emails(done.output)
        missing = [a for a in dict.fromkeys(wanted) if a not in patch.recipients]
        return self._case("get_maintainer", patch,
                          [f"not addressed (To/Cc): {a}" for a in missing], 0.0,
                          output=f"get_maintainer.pl: {', '.join(wanted) or 'nobody'}\n")


def patch_commits(store: Git, base: str, head: str,
                  recipients: Sequence[tuple[str, ...]] = ()) -> list[PatchCommit]:
    commits = store.out("rev-list", "--reverse", f"{base}..{head}").split()
    out = []
    parent = base
    for i, c in enumerate(commits, start=1):
        info = store.out("log", "-1", "--format=%s%x00%ae%x00%B", c)
        subject, email, message = info.split("\0", 2)
        files = tuple(store.out("diff-tree", "--no-commit-id", "--name-only", "-r",
                                "--no-renames", c).split())
        out.append(PatchCommit(i, c, parent, subject, files, message, email,
                               recipients[i - 1] if i <= len(recipients) else ()))
        parent = c
    return out


def run_checks(builder: Builder, tree: Path, store: Git, base: str, head: str,
               profile: Profile, kinds: Sequence[str], origin: SeriesOrigin | None,
               log: Path, say: Callable[[str], None],
               linked: frozenset[str] | None = None) -> list[TestCase]:
    """Every check of ``profile`` on each patch of base..head; ``kinds``: the
    series' patch kinds in order ("mail" or "diff"); ``linked``: the objects
    the build linked, when it recorded them."""
    require_tool("sparse")
    checker = Checker(builder, tree, store, profile, log,
                      isinstance(builder.kernel.source, GitSource), say, linked)
    patches = patch_commits(store, base, head, origin.recipients if origin else ())
    cases: list[TestCase] = []
    try:
        for p in patches:
            say(f"[{p.index}/{len(patches)}] {p.subject}")
            is_mail = p.index > len(kinds) or kinds[p.index - 1] == "mail"
            cases += checker.compile_cases(p)
            cases.append(checker.kernel_doc_case(p))
            cases.append(checker.fixes_case(p))
            cases.append(checker.signoff_case(p, is_mail))
            cases.append(checker.maintainers_case(p, origin))
    finally:
        checkout_commit(tree, head)
    return cases

