"""Configure and build a kernel: verified Kconfig, O= build dirs, ccache, artifacts.

* The build directory is kept per (kernel, configuration inputs), so the
  baseline, each patch and the patched tree build incrementally in it.
* The final .config is cached per (tree, configuration inputs, toolchain):
  a repeated build knows its build id without running make.
* Build id = sha256(tree after patches, final .config, toolchain, arch, make
  variables, targets).  ``kernels/builds/<id>/`` holds the artifacts and
  ``metadata.json``; it appears atomically after a successful build, so an
  interrupted or failed build is never taken for a cached one.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import re
import shutil
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from hvlab.build import kconfig
from hvlab.build.arches import ARCH_TABLE, TOOLCHAIN_TABLE, Arch
from hvlab.digest import sha256_file, sha256_text
from hvlab.errors import InfraError, UserError
from hvlab.fetch.source import checkout_commit
from hvlab.model import FragmentOption, KernelSpec
from hvlab.proc import Completed, capture, require_tool, run
from hvlab.workspace import Workspace

_KBUILD_LINK = re.compile(r"lib/modules/[^/]+/(?:build|source)")
FORMAT = "hvlab-build-4"  # bump when the artifact layout changes (4: objects)


def arch_info(arch: str) -> Arch:
    try:
        return ARCH_TABLE[arch]
    except KeyError:
        raise UserError(f"unsupported arch '{arch}' ({' | '.join(ARCH_TABLE)})") from None


@dataclass(frozen=True)
class Toolchain:
    name: str  # gcc or clang
    cc: str  # the compiler command (cross prefix included)
    cross_compile: str  # CROSS_COMPILE= ("" when native, or for clang)
    make_vars: tuple[tuple[str, str], ...]  # the toolchain's (LLVM=1)
    version: str  # first line of cc --version
    make_version: str
    ccache: str | None  # path of ccache when used


def toolchain(arch: Arch, name: str, use_ccache: bool,
              machine: str | None = None) -> Toolchain:
    """The toolchain ``name`` for ``arch`` on this machine; a missing compiler
    is an InfraError naming its Debian package."""
    spec = TOOLCHAIN_TABLE[name]
    machine = machine or os.uname().machine
    for tool, package in spec.tools(arch, machine).items():
        require_tool(tool, package, f"{arch.name} with {name}")
    for tool in ("make", "flex", "bison", "bc", "perl", "depmod"):
        require_tool(tool)
    cc = spec.compiler(arch, machine)
    version = capture([cc, "--version"]).stdout.decode().splitlines()[0].strip()
    make_version = capture(["make", "--version"]).stdout.decode().splitlines()[0].strip()
    ccache = shutil.which("ccache") if use_ccache else None
    return Toolchain(name, cc, spec.cross_compile(arch, machine), spec.make_vars, version,
                     make_version, ccache)


@dataclass(frozen=True)
class ConfigInputs:
    """Everything that decides the .config besides the tree itself."""

    base: str  # target name, or a file path
    base_text: str  # the file's content when base is a file
    fragments: tuple[tuple[str, str], ...]  # (name, content), in order
    arch: str
    make_vars: tuple[tuple[str, str], ...]
    toolchain: str = "gcc"

    def key(self, toolchain_version: str) -> str:
        frag = "".join(f"{n}\n{c}\n" for n, c in self.fragments)
        mv = "".join(f"{k}={v}\n" for k, v in self.make_vars)
        return sha256_text(self.base, self.base_text, frag, self.arch, mv, toolchain_version,
                           *([self.toolchain] if self.toolchain != "gcc" else []))

    def requested(self) -> list[tuple[str, FragmentOption]]:
        """The effective request per symbol: a later fragment overrides an earlier one."""
        last: dict[str, tuple[str, FragmentOption]] = {}
        for name, content in self.fragments:
            options, errors = kconfig.parse_fragment(content)
            if errors:
                e = errors[0]
                raise UserError(f"fragment {name}:{e.line}: {e.message}")
            for o in options:
                last.pop(o.symbol, None)  # re-insert: keep the order of the final request
                last[o.symbol] = (name, o)
        return list(last.values())


def config_inputs(kernel: KernelSpec, fragment_files: Sequence[tuple[str, Path]]) -> ConfigInputs:
    frags = []
    for name, path in fragment_files:
        try:
            frags.append((name, path.read_text()))
        except OSError as exc:
            raise UserError(f"fragment {name}: cannot read {path}: {exc.strerror}") from None
    base = kernel.config.base
    base_text = ""
    if kernel.config.base_is_file:
        try:
            base_text = Path(base).read_text()
        except OSError as exc:
            raise UserError(f"kernel '{kernel.name}': base config {base}: {exc.strerror}") from None
    return ConfigInputs(base, base_text, tuple(frags), kernel.arch,
                        tuple(sorted(kernel.make_vars.items())), kernel.toolchain)


@dataclass(frozen=True)
class Configured:
    config_text: str
    mismatches: tuple[kconfig.Mismatch, ...]
    requested: int
    cached: bool

    @property
    def facts(self) -> dict[str, str]:
        return {"config_hash": hashlib.sha256(self.config_text.encode()).hexdigest()}


@dataclass
class Builder:
    """Builds one kernel (one KernelSpec + config inputs) in its build directory."""

    ws: Workspace
    kernel: KernelSpec
    inputs: ConfigInputs
    jobs: int
    use_ccache: bool = True
    on_line: Callable[[str], None] | None = None
    # a build-only cell's directories (hvlab.build.touched): make <dir>/ after
    # modules_prepare, no image; None: the whole build
    touched: tuple[str, ...] | None = None
    info: Arch = field(init=False)
    tools: Toolchain = field(init=False)

    def __post_init__(self) -> None:
        self.info = arch_info(self.kernel.arch)
        self.tools = toolchain(self.info, self.kernel.toolchain, self.use_ccache)

    # -- paths -------------------------------------------------------------------
    @property
    def config_key(self) -> str:
        return self.inputs.key(self.tools.version)

    @property
    def build_dir(self) -> Path:
        return self.ws.builds / "work" / f"{self.kernel.name}-{self.config_key[:16]}"

    def make_argv(self, tree: Path, *targets: str, quiet: bool = False,
                  out: Path | None = None) -> list[str]:
        """``out``: another build directory than the build's (the check stage's)."""
        argv = ["make", "-C", str(tree), f"O={out or self.build_dir}",
                f"ARCH={self.info.make_arch}"]
        if quiet:
            argv.append("-s")
        if self.tools.cross_compile:
            argv.append(f"CROSS_COMPILE={self.tools.cross_compile}")
        argv += [f"{k}={v}" for k, v in self.tools.make_vars]
        if self.tools.ccache:
            argv.append(f"CC={self.tools.ccache} {self.tools.cc}")
        argv += [f"{k}={v}" for k, v in self.inputs.make_vars]
        return argv + list(targets)

    def make_env(self, stats_log: Path | None = None) -> dict[str, str]:
        env = {"LC_ALL": "C", "KBUILD_BUILD_USER": "hvlab", "KBUILD_BUILD_HOST": "hvlab",
               "KBUILD_BUILD_TIMESTAMP": "@0"}
        if self.tools.ccache:
            env.setdefault("CCACHE_DIR", os.environ.get("CCACHE_DIR",
                                                        str(self.ws.kernels / "ccache")))
            env["CCACHE_BASEDIR"] = str(self.ws.kernels)
            if stats_log is not None:
                env["CCACHE_STATSLOG"] = str(stats_log)
        return env

    def make(self, tree: Path, targets: Sequence[str], log: Path,
              stats_log: Path | None = None, timeout: float | None = None) -> Completed:
        return run(self.make_argv(tree, f"-j{self.jobs}", *targets), log=log,
                   env=self.make_env(stats_log), on_line=self.on_line, timeout=timeout)

    # -- configure ---------------------------------------------------------------
    def configure_at(self, tree: Path, commit: str, kconfig_sha: str, log: Path) -> Configured:
        """The final .config for ``commit``: cached per (what kconfig reads of the
        tree: stage.kconfig_sha, inputs, toolchain); otherwise the worktree is
        switched to ``commit`` and kconfig runs."""
        requested = self.inputs.requested()
        key = sha256_text(self.config_key, kconfig_sha)
        cache = self.ws.cache / "config" / f"{key}.json"
        if cache.is_file():
            data = json.loads(cache.read_text())
            mism = tuple(kconfig.Mismatch(**m) for m in data["mismatches"])
            return Configured(data["config"], mism, len(requested), True)
        checkout_commit(tree, commit)
        self.build_dir.mkdir(parents=True, exist_ok=True)
        dotconfig = self.build_dir / ".config"
        if self.inputs.base_text:
            dotconfig.write_text(self.inputs.base_text)
            step = self.make(tree, ["olddefconfig"], log)
        else:
            step = self.make(tree, [self.inputs.base], log)
        if not step.ok:
            raise self._make_failure("configure", step)
        merged = kconfig.merge(dotconfig.read_text(),
                               [[o for _, o in requested]])
        dotconfig.write_text(merged)
        step = self.make(tree, ["olddefconfig"], log)
        if not step.ok:
            raise self._make_failure("olddefconfig", step)
        text = dotconfig.read_text()
        final = kconfig.parse_dotconfig(text)
        mismatches = kconfig.verify(requested, final)
        explained = tuple(self._explain(tree, m, final) for m in mismatches)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps({"config": text, "mismatches": [
            {"symbol": m.symbol, "requested": m.requested, "got": m.got, "fragment": m.fragment,
             "line": m.line, "why": m.why} for m in explained]}))
        os.replace(tmp, cache)
        return Configured(text, explained, len(requested), False)

    def _explain(self, tree: Path, m: kconfig.Mismatch, final: dict[str, str]
                 ) -> kconfig.Mismatch:
        if m.requested == "n":  # asked to stay unset and got set: what selects it
            texts = (_read(path) for path in _kconfig_files(tree))
            selectors = [s for text in texts if f"select {m.symbol}" in text
                         for s in kconfig.find_selectors(text, m.symbol)]
            return replace(m, why=kconfig.explain_selected(selectors, final))
        for path in _kconfig_files(tree):
            text = _read(path)
            if f"config {m.symbol}\n" not in text and f"config {m.symbol} " not in text:
                continue
            deps = kconfig.find_depends(text, m.symbol)
            if deps:
                return replace(m, why=kconfig.explain(deps, final))
        if not any(_symbol_defined(p, m.symbol) for p in _kconfig_files(tree)):
            return replace(m, why="no such symbol in this tree's Kconfig files")
        return m

    def _make_failure(self, what: str, step: Completed) -> Exception:
        tail = "\n".join(step.output.splitlines()[-5:])
        return step.machine_failure(what) or UserError(
            f"{what} failed for kernel '{self.kernel.name}': {tail}")

    def write_config(self, text: str) -> None:
        """Put ``text`` in the build dir's .config, leaving it untouched when equal
        (kbuild watches its mtime)."""
        self.build_dir.mkdir(parents=True, exist_ok=True)
        dotconfig = self.build_dir / ".config"
        if not dotconfig.is_file() or dotconfig.read_text() != text:
            dotconfig.write_text(text)

    # -- build -------------------------------------------------------------------
    def targets(self, config_text: str) -> list[str]:
        final = kconfig.parse_dotconfig(config_text)
        if self.touched is not None:
            return [self.prepare_target(config_text), *self.touched]
        targets = [self.info.image_target]
        if final.get("MODULES") == "y":
            targets.append("modules")
        return targets

    def prepare_target(self, config_text: str) -> str:
        """What a touched-only build makes first (kbuild's single-directory goals
        cannot share a make with it)."""
        modules = kconfig.parse_dotconfig(config_text).get("MODULES") == "y"
        return "modules_prepare" if modules else "prepare"

    def scope(self) -> str:
        """What a build of this builder compiles, for the report."""
        if self.touched is None:
            return "full"
        return "touched only: " + (" ".join(self.touched) or "nothing the series changes is "
                                   f"compiled on {self.info.name}")

    def build_id(self, tree_sha: str, config_text: str) -> str:
        mv = "".join(f"{k}={v}\n" for k, v in self.inputs.make_vars)
        return sha256_text(FORMAT, tree_sha, config_text, self.tools.version, self.kernel.arch,
                           mv, " ".join(self.targets(config_text)))


def _kconfig_files(tree: Path) -> list[Path]:
    out = []
    for root, dirs, files in os.walk(tree):
        dirs[:] = [d for d in dirs if d not in (".git", "Documentation", "tools")]
        out += [Path(root) / f for f in files if f.startswith("Kconfig")]
    return out


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _symbol_defined(path: Path, symbol: str) -> bool:
    text = _read(path)
    return f"config {symbol}\n" in text or f"config {symbol} " in text


def ccache_stats(stats_log: Path) -> dict[str, int]:
    """Hits and misses from a ccache stats log (CCACHE_STATSLOG), pure counting."""
    counts: collections.Counter[str] = collections.Counter()
    try:
        lines = stats_log.read_text().splitlines()
    except OSError:
        return {"hits": 0, "misses": 0}
    for line in lines:
        counts[line.strip()] += 1
    hits = counts["direct_cache_hit"] + counts["preprocessed_cache_hit"]
    return {"hits": hits, "misses": counts["cache_miss"]}


@dataclass(frozen=True)
class Artifact:
    name: str
    size: int
    sha256: str


def pack_modules(modroot: Path, target: Path) -> None:
    """The modules_install tree as a tarball, without kbuild's ``build`` and
    ``source`` links (they point into this machine's tree, useless on a target)."""

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        if info.issym() and _KBUILD_LINK.fullmatch(info.name.removeprefix("./")):
            return None
        return info

    # Entries from lib/modules/<release> down only: extracted at /, a "lib"
    # directory entry would replace merged-/usr's /lib -> usr/lib symlink.
    with tarfile.open(target, "w:gz", compresslevel=6) as tf:
        for release in sorted((modroot / "lib" / "modules").iterdir()):
            tf.add(release, arcname=f"./lib/modules/{release.name}", filter=keep)


OBJECTS = "objects"  # the artifact listing the objects the build linked


def kbuild_objects(build_dir: Path) -> list[str]:
    """The objects kbuild linked in this configuration, from its own records:
    the members of ``vmlinux.a`` (a thin archive) and the ``.mod`` file of
    each module in ``modules.order``; [] without ``vmlinux.a``."""
    archive = build_dir / "vmlinux.a"
    if not archive.is_file():
        return []
    # in the build directory: ar names a thin archive's members relative to it
    listed = capture(["ar", "t", archive.name], cwd=build_dir, timeout=120)
    if listed.returncode != 0:
        raise InfraError(f"ar t {archive} failed: "
                         f"{listed.stderr.decode(errors='replace').strip()[-300:]}")
    out = listed.stdout.decode(errors="replace").split()
    order = build_dir / "modules.order"
    for module in order.read_text().split() if order.is_file() else []:
        mod = build_dir / f"{module.removesuffix('.ko').removesuffix('.o')}.mod"
        if mod.is_file():
            out += mod.read_text().split()
    return sorted(set(out))


def collect_artifacts(builder: Builder, tree: Path, staging: Path, config_text: str,
                      log: Path) -> tuple[list[Artifact], str]:
    """Copy image, System.map, .config, modules tarball and kernelrelease into ``staging``."""
    bd = builder.build_dir
    image = bd / builder.info.image_path
    if not image.is_file():
        raise InfraError(f"make succeeded but {image} is missing")
    shutil.copy2(image, staging / Path(builder.info.image_path).name)
    shutil.copy2(bd / "System.map", staging / "System.map")
    (staging / "config").write_text(config_text)
    release = run(builder.make_argv(tree, "kernelrelease", quiet=True),
                  env=builder.make_env()).output.strip().splitlines()
    kernelrelease = release[-1].strip() if release else ""
    if not kernelrelease:
        raise InfraError("make kernelrelease printed nothing")
    (staging / "kernelrelease").write_text(kernelrelease + "\n")
    objects = kbuild_objects(bd)
    if objects:
        (staging / OBJECTS).write_text("".join(f"{o}\n" for o in objects))
    if "modules" in builder.targets(config_text):
        modroot = staging / ".modroot"
        step = run(builder.make_argv(tree, "modules_install",
                                     f"INSTALL_MOD_PATH={modroot}", "INSTALL_MOD_STRIP=1"),
                   log=log, env=builder.make_env())
        if not step.ok:
            raise InfraError(f"make modules_install failed (see {log})")
        pack_modules(modroot, staging / "modules.tar.gz")
        shutil.rmtree(modroot)
    arts = []
    for p in sorted(staging.iterdir()):
        if p.is_file() and p.name not in ("metadata.json", "reproduce.sh"):
            arts.append(Artifact(p.name, p.stat().st_size, sha256_file(p)))
    return arts, kernelrelease
