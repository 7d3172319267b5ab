"""The configure and build stages: one commit built in a Builder's build dir.

``build_commit`` is one build (cached by build id).  ``flows.build`` chains
baseline, each-patch and the final build and turns them into JUnit cases.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from hvlab import procs
from hvlab.build import diagnostics as buildlog
from hvlab.build.builder import Artifact, Builder, Configured, ccache_stats, collect_artifacts
from hvlab.build.diagnostics import Diagnostic
from hvlab.digest import sha256_text
from hvlab.fetch.source import checkout_commit
from hvlab.git import Git
from hvlab.results import Status, TestCase
from hvlab.suites import hvtree
from hvlab.workspace import Workspace

STATE_FILE = ".hvlab-diagnostics.json"


@dataclass(frozen=True)
class BuildResult:
    commit: str
    build_id: str
    ok: bool
    cached: bool
    path: Path | None  # kernels/builds/<id> when ok
    kernelrelease: str
    diagnostics: tuple[Diagnostic, ...]  # complete for the tree, not only this log
    errors: tuple[str, ...]  # first errors (file:line: message) or make errors
    duration: float
    log: Path
    ccache: dict[str, int]
    compiler: str = ""  # the compiler's own version line

    @property
    def facts(self) -> dict[str, str]:
        return {"build_id": self.build_id, "kernel_release": self.kernelrelease,
                "compiler": self.compiler}


def _diag_to_json(d: Diagnostic) -> dict[str, object]:
    return {"file": d.file, "line": d.line, "kind": d.kind, "message": d.message,
            "flag": d.flag, "function": d.function}


def _diag_from_json(d: dict[str, object]) -> Diagnostic:
    return Diagnostic(str(d["file"]), int(str(d["line"])), str(d["kind"]), str(d["message"]),
                      str(d.get("flag", "")), str(d.get("function", "")))


def load_state(build_dir: Path) -> dict[str, list[Diagnostic]]:
    path = build_dir / STATE_FILE
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return {f: [_diag_from_json(d) for d in ds] for f, ds in data.items()}


def save_state(build_dir: Path, state: dict[str, list[Diagnostic]]) -> None:
    path = build_dir / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({f: [_diag_to_json(d) for d in ds] for f, ds in state.items()}))
    os.replace(tmp, path)


def ensure_consistent_build_dir(builder: Builder) -> None:
    """A build dir without diagnostics state (older or crashed run) starts cold,
    so that every build's recorded diagnostics are complete."""
    bd = builder.build_dir
    if bd.is_dir() and not (bd / STATE_FILE).is_file() and any(bd.rglob("*.o")):
        config = bd / ".config"
        keep = config.read_text() if config.is_file() else None
        shutil.rmtree(bd)
        bd.mkdir(parents=True)
        if keep is not None:
            config.write_text(keep)


def tree_sha(ws: Workspace, commit: str) -> str:
    return Git(ws.store).out("rev-parse", f"{commit}^{{tree}}")


def kconfig_sha(ws: Workspace, commit: str) -> str:
    """A digest of what the configuration of ``commit`` can depend on: every
    Kconfig* file, scripts/ (kconfig itself and the scripts Kconfig calls),
    arch/*/configs/ and the top Makefile (the version in .config's header).
    A patch to a driver's C code leaves it unchanged, so the cached .config
    serves the next edit of a series instead of two kconfig runs."""
    listing = Git(ws.store).out("ls-tree", "-r", "--full-tree", commit)
    wanted = []
    for line in listing.splitlines():
        meta, _, path = line.partition("\t")
        name = path.rsplit("/", 1)[-1]
        if name.startswith("Kconfig") or path.startswith("scripts/") or path == "Makefile" \
                or (path.startswith("arch/") and "/configs/" in path):
            wanted.append(f"{meta.split()[-1]} {path}")
    return sha256_text("kconfig inputs", *wanted)


def make_goals(builder: Builder, targets: list[str]) -> list[list[str]]:
    """The makes ``targets`` take: one, or for a touched-only build two, since
    kbuild's single-directory goals cannot share a make with modules_prepare."""
    return [targets] if builder.touched is None else [t for t in (targets[:1], targets[1:]) if t]


def make_step(builder: Builder, tree: Path, targets: list[str], log: Path,
              stats: Path | None = None) -> tuple[bool, list[Diagnostic], list[str]]:
    """The makes of ``targets`` (make_goals), incremental; updates the build dir's
    diagnostics state.  Returns (ok, complete diagnostics, first errors)."""
    for goals in make_goals(builder, targets):
        ok, diags, errors = _make_once(builder, tree, goals, log, stats)
        if not ok:
            break
    return ok, diags, errors


def _make_once(builder: Builder, tree: Path, targets: list[str], log: Path,
               stats: Path | None) -> tuple[bool, list[Diagnostic], list[str]]:
    ensure_consistent_build_dir(builder)
    start = log.stat().st_size if log.exists() else 0
    step = builder.make(tree, targets, log, stats)
    with log.open(encoding="utf-8", errors="backslashreplace") as fh:
        fh.seek(start)
        lines = fh.read().splitlines()
    prefixes = [str(tree), str(builder.build_dir), os.path.relpath(tree, builder.build_dir)]
    diags = buildlog.parse(lines, prefixes)
    state = buildlog.update_state(load_state(builder.build_dir),
                                  buildlog.compiled_units(lines), diags)
    save_state(builder.build_dir, state)
    problem = step.machine_failure("build")
    if problem is not None:
        raise problem
    errors = [d.describe() for d in buildlog.unique(diags) if d.kind == "error"]
    if not step.ok and not errors:
        errors = buildlog.make_errors(lines)[:5] or [step.output.splitlines()[-1:][0]
                                                     if step.output else "make failed"]
    return step.ok, buildlog.flatten(state), errors


def write_reproducer(path: Path, builder: Builder, tree: Path, commit: str,
                     targets: list[str]) -> None:
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in builder.make_env().items())
    makes = "".join(f"env {env} {shlex.join(builder.make_argv(tree, f'-j{builder.jobs}', *t))}\n"
                    for t in make_goals(builder, targets))
    path.write_text(
        "#!/bin/sh\n"
        "# Rebuild this kernel exactly as hvlab did (written before make started).\n"
        "set -eu\n"
        f"git -C {shlex.quote(str(tree))} checkout --detach {commit}\n"
        f"mkdir -p {shlex.quote(str(builder.build_dir))}\n"
        # the config beside this script: the folder is renamed into place after make
        f"cp \"$(dirname \"$0\")/config\" {shlex.quote(str(builder.build_dir / '.config'))}\n"
        + makes
    )
    path.chmod(0o755)


def build_commit(builder: Builder, tree: Path, commit: str, configured: Configured,
                 log: Path, force: bool) -> BuildResult:
    """Build ``commit`` (the worktree is switched to it when make must run)."""
    ws = builder.ws
    t0 = time.monotonic()
    sha = tree_sha(ws, commit)
    build_id = builder.build_id(sha, configured.config_text)
    final = ws.builds / build_id
    meta_path = final / "metadata.json"
    if meta_path.is_file() and not force:
        meta = json.loads(meta_path.read_text())
        return BuildResult(commit, build_id, True, True, final, meta["kernelrelease"],
                           tuple(_diag_from_json(d) for d in meta["diagnostics"]), (),
                           time.monotonic() - t0, log, meta.get("ccache", {}),
                           str(meta.get("toolchain", {}).get("version", "")))
    checkout_commit(tree, commit)
    builder.write_config(configured.config_text)
    targets = builder.targets(configured.config_text)
    here = f".staging-{build_id[:16]}-{procs.space_tag()}-"
    staging = ws.builds / f"{here}{os.getpid()}"
    for left in ws.builds.glob(f"{here}*"):  # pids of this machine and namespace only
        pid = left.name.removeprefix(here)
        if left != staging and pid.isdigit() and procs.start_time(int(pid)) is None:
            shutil.rmtree(left, ignore_errors=True)  # a killed run's half build
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        (staging / "config").write_text(configured.config_text)
        write_reproducer(staging / "reproduce.sh", builder, tree, commit, targets)
        stats = log.parent / f"ccache-{build_id[:16]}.stats"
        stats.unlink(missing_ok=True)
        m0 = time.monotonic()
        ok, diags, errors = make_step(builder, tree, targets, log, stats)
        make_seconds = time.monotonic() - m0
        cc = ccache_stats(stats) if builder.tools.ccache else {}
        if not ok:
            return BuildResult(commit, build_id, False, False, None, "", tuple(diags),
                               tuple(errors[:10]), time.monotonic() - t0, log, cc)
        artifacts: list[Artifact] = []
        release = ""
        if builder.touched is None:  # a touched-only build keeps its record only
            artifacts, release = collect_artifacts(builder, tree, staging,
                                                   configured.config_text, log)
        if builder.touched is None and (tree / "include/linux/hyperv.h").is_file():
            # what the Hyper-V checks expect
            (staging / "hyperv.json").write_text(hvtree.extract(
                tree, f"{builder.kernel.name} at {commit}").to_json())
        meta = metadata(builder, tree, commit, sha, build_id, targets, release, diags,
                        artifacts, make_seconds, cc, configured.config_text)
        (staging / "metadata.json").write_text(json.dumps(meta, indent=1))
        if final.exists():  # --force: replace
            shutil.rmtree(final)
        os.replace(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return BuildResult(commit, build_id, True, False, final, release, tuple(diags), (),
                       time.monotonic() - t0, log, cc, builder.tools.version)


def metadata(builder: Builder, tree: Path, commit: str, sha: str, build_id: str,
             targets: list[str], release: str, diags: list[Diagnostic],
             artifacts: list[Artifact], seconds: float, cc: dict[str, int],
             config_text: str) -> dict[str, object]:
    warnings = sum(1 for d in diags if d.kind == "warning")
    return {
        "build_id": build_id,
        "kernel": builder.kernel.name,
        "source_commit": commit,
        "tree": sha,
        "config_sha256": hashlib.sha256(config_text.encode()).hexdigest(),
        "config_inputs_key": builder.config_key,
        "arch": builder.kernel.arch,
        "toolchain": {"cc": builder.tools.cc, "version": builder.tools.version,
                      "make": builder.tools.make_version,
                      "ccache": builder.tools.ccache or None},
        "make_command": shlex.join(builder.make_argv(tree, f"-j{builder.jobs}", *targets)),
        "duration_s": round(seconds, 2),
        "ccache": cc,
        "kernelrelease": release,
        "scope": builder.scope(),  # full, or touched only (no image: hvlab.build.touched)
        "warnings": warnings,
        "errors": len(diags) - warnings,
        "diagnostics": [_diag_to_json(d) for d in diags],
        "artifacts": [{"name": a.name, "size": a.size, "sha256": a.sha256} for a in artifacts],
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def warning_cases(new: list[Diagnostic], log: Path) -> list[TestCase]:
    return [TestCase(f"warning: {d.file}:{d.line}: {d.message}", Status.FAIL,
                     f"new warning (not in the baseline): {d.describe()}", log_path=log)
            for d in new]


def build_case(name: str, result: BuildResult, known: list[Diagnostic],
               scope: str = "full") -> TestCase:
    listing = "\n".join(f"  {d.kind}: {d.describe()}" for d in known)
    output = (f"build id {result.build_id}\n"
              + (f"{scope} (a build-only cell: nothing boots it)\n" if scope != "full" else "")
              + (f"artifacts {result.path}\nkernelrelease {result.kernelrelease}\n"
                 if result.ok and result.path is not None and result.kernelrelease else
                 f"record {result.path} (no image)\n" if result.ok and result.path is not None
                 else "")
              + (f"ccache hits {result.ccache.get('hits', 0)}, misses "
                 f"{result.ccache.get('misses', 0)}\n" if result.ccache else "")
              + ("cached\n" if result.cached else "")
              + (f"warnings also in the baseline (not gating):\n{listing}\n" if known else ""))
    if result.ok:
        return TestCase(name, Status.PASS, output=output, duration=result.duration,
                        log_path=result.log)
    first = "; ".join(result.errors[:3]) or "make failed"
    return TestCase(name, Status.FAIL, f"build failed: {first}",
                    output=output + "\n".join(result.errors), duration=result.duration,
                    log_path=result.log, evidence="\n".join(result.errors))
