"""Load and validate every file under ``configs/`` into a ``Config``.

All problems are collected (not just the first) and reported as
``path:line:col: key.path: message``.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from hvlab.build.arches import ARCHES, TOOLCHAINS
from hvlab.build.kconfig import parse_fragment
from hvlab.config import schema, yamlnode
from hvlab.config.pairing import boot_hosts
from hvlab.config.reader import ConfigIssue, Issues, MapReader, root_map
from hvlab.config.shape import Shape
from hvlab.config.tables import Config
from hvlab.config.yamlnode import Mark
from hvlab.errors import UserError
from hvlab.hosts.registry import kind_class
from hvlab.model import (
    BASE_TARGETS,
    HOST_KINDS,
    NO_SERIES,
    PARSERS,
    FragmentSpec,
    GitSource,
    HostKind,
    HostSpec,
    KernelConfigSpec,
    KernelSpec,
    PathSource,
    PlanSpec,
    SeriesSpec,
    SshEndpoint,
    SuiteSpec,
    SuiteTest,
    TarballSource,
    Variant,
)
from hvlab.patch.discover import load_series
from hvlab.report.compare import KnownFailure
from hvlab.suites.hvtree import KINDS
from hvlab.suites.names import BUILTIN_TESTS
from hvlab.workspace import Workspace

T = TypeVar("T")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_FINGERPRINT = re.compile(r"SHA256:[A-Za-z0-9+/]{43}=?")
VMBUS_KINDS = tuple(dict.fromkeys(KINDS.values()))  # class:<kind> in requires
_SCRATCH = re.compile(r"/dev/[A-Za-z0-9_./:-]+")
_NIC = re.compile(r"[A-Za-z0-9_.:-]{1,15}")
_MODULE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_KSFT_TARGET = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./-]*")
_REQUIRE = re.compile(r"vmbus|module:[A-Za-z0-9_-]+|class:[A-Za-z0-9_-]+|path:/\S*")


@dataclass(frozen=True)
class Ref:
    """A name in one file that must exist in another collection."""

    kind: str
    name: str
    mark: Mark
    key: str


class _Loader:
    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.root = ws.configs
        self.issues = Issues()
        self.refs: list[Ref] = []
        self.pairings: list[tuple[str, Mark]] = []  # (plan, its kernels key)
        self.config = Config(self.root)

    # -- helpers -----------------------------------------------------------
    def show(self, path: Path) -> str:
        return self.ws.display(path)

    def _yaml_files(self, sub: str) -> Iterable[Path]:
        folder = self.root / sub
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and
                      p.is_file())

    def _read(self, path: Path, shape: Shape) -> MapReader | None:
        self.config.files.append(path)
        node, problems = yamlnode.load(path, self.show(path))
        for p in problems:
            self.issues.add(p.mark, "", p.message)
        if problems:
            return None
        return root_map(node, self.show(path), self.issues, shape)

    def _name(self, r: MapReader, path: Path) -> str:
        name = path.stem
        given = r.string("name")
        if given is not None and given != name:
            r.error("name", f"'{given}' must equal the file name '{name}'")
        if not _NAME.fullmatch(name):
            self.issues.add(Mark(self.show(path), 1, 1), "",
                            f"'{name}' is not a valid name (letters, digits, . _ + -)")
        return name

    def _path(self, text: str, base: Path) -> Path:
        p = Path(text).expanduser()
        return p if p.is_absolute() else (base.parent / p).resolve()

    def _refs(self, r: MapReader, key: str, kind: str, allow: tuple[str, ...] = (),
              required: bool = False) -> tuple[str, ...]:
        out = []
        for name, mark in r.str_list(key, required=required):
            if name not in allow:
                self.refs.append(Ref(kind, name, mark, r._key(key)))
            out.append(name)
        if required and not out and r.has(key):
            r.error(key, "must name at least one")
        return tuple(out)

    # -- kernels -----------------------------------------------------------
    def kernels(self) -> None:
        for path in self._yaml_files("kernels"):
            r = self._read(path, schema.KERNEL)
            if r is None:
                continue
            name = self._name(r, path)
            source = self._source(r, path)
            arch = r.enum("arch", ARCHES, default="x86_64") or "x86_64"
            tools = r.enum("toolchain", TOOLCHAINS, default="gcc") or "gcc"
            cfg = r.nested("config", functools.partial(self._kconfig, path=path))
            make_vars = r.str_map("make_vars")
            for var in make_vars:
                if not re.fullmatch(r"[A-Z_][A-Z0-9_]*", var):
                    r.error("make_vars", f"'{var}' is not a make variable name")
            desc = r.string("description", default="") or ""
            r.done()
            if source is not None:
                self.config.kernels[name] = KernelSpec(
                    name, path, source, arch, cfg or KernelConfigSpec("tinyconfig"),
                    make_vars, desc, tools)

    def _source(self, r: MapReader, path: Path) -> GitSource | TarballSource | PathSource | None:
        s = r.map("source", required=True)
        if s is None:
            return None
        present = [k for k in ("git", "tarball", "path") if s.has(k)]
        result: GitSource | TarballSource | PathSource | None = None
        if len(present) != 1:
            s.error("git", "exactly one of git, tarball, path is required"
                    + (f" (found {', '.join(present)})" if present else ""), mark=s.mark)
            for k in ("git", "tarball", "path", "ref", "sha256"):
                s.raw(k)
        elif present == ["git"]:
            url = s.req_str("git")
            ref = s.req_str("ref")
            others = []
            for v, _mark in s.str_list("other_refs"):
                if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/-]*", v) and ".." not in v:
                    others.append(v)
                else:
                    s.error("other_refs", f"'{v}' is not a ref name")
            result = GitSource(url, ref, tuple(others))
        elif present == ["tarball"]:
            loc = s.req_str("tarball")
            sha = s.string("sha256")
            if sha is not None and not _SHA256.fullmatch(sha.lower()):
                s.error("sha256", f"'{sha}' is not 64 hex digits")
                sha = None
            if "://" not in loc:
                loc = str(self._path(loc, path))
            result = TarballSource(loc, sha.lower() if sha else None)
        else:
            p = self._path(s.req_str("path"), path)
            result = PathSource(p)
        s.done()
        return result

    def _kconfig(self, c: MapReader, path: Path) -> KernelConfigSpec:
        base = c.string("base", default="defconfig") or "defconfig"
        if base not in BASE_TARGETS:
            resolved = self._path(base, path)
            if not resolved.is_file():
                c.error("base", f"'{base}' is not one of {', '.join(BASE_TARGETS)} "
                        "nor an existing config file")
            base = str(resolved)
        frags = self._refs(c, "fragments", "fragment")
        return KernelConfigSpec(base, frags)

    # -- fragments and series ------------------------------------------------
    def fragments(self) -> None:
        folder = self.root / "fragments"
        if not folder.is_dir():
            return
        for path in sorted(folder.glob("*.config")):
            self.config.files.append(path)
            options, errors = parse_fragment(path.read_text("utf-8", "replace"))
            for e in errors:
                self.issues.add(Mark(self.show(path), e.line, 1), "", e.message)
            self.config.fragments[path.stem] = FragmentSpec(path.stem, path, tuple(options))

    def series(self) -> None:
        folder = self.root / "patches"
        if not folder.is_dir():
            return
        for path in sorted(p for p in folder.iterdir() if p.is_dir()):
            if path.is_symlink() and not path.resolve().is_relative_to(self.root.resolve()):
                self.issues.add(Mark(self.show(path), 0, 0), "",
                                "a link to a directory outside configs/: refused")
                continue
            loaded = load_series(path.name, path, self.show(path))
            for problem in loaded.problems:
                where, _, message = problem.rpartition(": ")
                file, _, line = where.rpartition(":")
                if line.isdigit():
                    self.issues.add(Mark(file, int(line), 1), "", message)
                else:
                    self.issues.add(Mark(where, 0, 0), "", message)
            self.config.series[path.name] = SeriesSpec(path.name, path)

    # -- hosts -----------------------------------------------------------------
    def endpoint(self, r: MapReader, path: Path, address_required: bool = True) -> SshEndpoint:
        address = r.string("address", required=address_required) or ""
        port = r.integer("port", 22, 1, 65535)
        user = r.string("user", default="root") or "root"
        key = r.string("key")
        password_env = r.string("password_env")
        host_key = r.string("host_key")
        if host_key is not None and not _FINGERPRINT.fullmatch(host_key):
            r.error("host_key", "expected an OpenSSH fingerprint 'SHA256:<43 base64 chars>' "
                    "(ssh-keygen -lf KEY.pub)")
        known = r.string("known_hosts")
        policy = r.enum("host_key_policy", ("strict", "accept-new"), default="strict") or "strict"
        timeout = r.integer("connect_timeout", 10, 1, 600)
        via = r.string("via")
        if via is not None:
            self.refs.append(Ref("host", via, r.key_mark("via"), r._key("via")))
        return SshEndpoint(
            address, port, user, self._path(key, path) if key else None, password_env,
            host_key, self._path(known, path) if known else None, policy, timeout, via)

    def host_ref(self, r: MapReader, key: str, name: str) -> None:
        self.refs.append(Ref("host", name, r.key_mark(key), r._key(key)))

    def hosts(self) -> None:
        for path in self._yaml_files("hosts"):
            r = self._read(path, schema.HOST)
            if r is None:
                continue
            name = self._name(r, path)
            kind = r.enum("kind", HOST_KINDS, required=True)
            boot_timeout = r.integer("boot_timeout", 120, 1, 86400)
            arch = r.enum("arch", ARCHES, default="x86_64") or "x86_64"
            iperf = r.string("iperf_server")
            scratch = r.string("scratch_disk")
            if scratch is not None and not _SCRATCH.fullmatch(scratch):
                r.error("scratch_disk", f"'{scratch}' is not a device path (/dev/<name>)")
            spare = r.string("spare_nic")
            if spare is not None and not _NIC.fullmatch(spare):
                r.error("spare_nic", f"'{spare}' is not an interface name")
            desc = r.string("description", default="") or ""
            detail = None
            if kind is not None:
                r.select(kind)
                detail = kind_class(HostKind(kind)).read_config(r, path, self)
            else:
                r.skip_rest()  # the kind is wrong; do not also call every key unknown
            r.done()
            if detail is not None and kind is not None:
                self.config.hosts[name] = HostSpec(name, path, HostKind(kind), detail,
                                                   boot_timeout, iperf, desc, scratch, spare,
                                                   arch)

    # -- suites and plans --------------------------------------------------------
    def suites(self) -> None:
        for path in self._yaml_files("suites"):
            r = self._read(path, schema.SUITE)
            if r is None:
                continue
            name = self._name(r, path)
            desc = r.string("description", default="") or ""
            scripts = r.string("scripts")
            scripts_path = self._path(scripts, path) if scripts else None
            if scripts_path is not None and not scripts_path.is_dir():
                r.error("scripts", f"'{scripts}' is not a directory")
            tests = []
            seen: set[str] = set()
            for t in r.maps("tests", required=True):
                tests.append(self._test(t, seen))
                t.done()
            r.done()
            self.config.suites[name] = SuiteSpec(name, path, tuple(tests), scripts_path, desc)

    def _test(self, t: MapReader, seen: set[str]) -> SuiteTest:
        name = t.req_str("name")
        if name in seen:
            t.error("name", f"duplicate test name '{name}'")
        seen.add(name)
        parser = t.enum("parser", PARSERS, default="exit-code") or "exit-code"
        requires = []
        for req, mark in t.str_list("requires"):
            if not _REQUIRE.fullmatch(req):
                t.error("requires", f"unknown requirement '{req}' (vmbus | module:<name> | "
                        "class:<vmbus class> | path:<absolute path>)", mark=mark)
            requires.append(req)
        kselftest = []
        for target, mark in t.str_list("kselftest"):
            if not _KSFT_TARGET.fullmatch(target) or ".." in target.split("/"):
                t.error("kselftest", f"'{target}' is not a kselftest target (a directory "
                        "under tools/testing/selftests, e.g. size or net/forwarding)",
                        mark=mark)
            kselftest.append(target)
        if t.has("kselftest"):
            if not kselftest:
                t.error("kselftest", "an empty list: name the targets to build and run")
            for key in ("run", "parser", "results"):
                if t.raw(key) is not None:
                    t.error(key, f"'{key}' does not go with 'kselftest' (the collection's "
                            "run_kselftest.sh runs, its TAP output is parsed)")
            run = "kselftest:" + " ".join(kselftest)
            parser = "tap"
        else:
            run = t.req_str("run")
        if run.startswith("builtin:") and run.removeprefix("builtin:") not in BUILTIN_TESTS:
            t.error("run", f"unknown built-in test '{run}' (builtin: "
                    f"{' | '.join(BUILTIN_TESTS)})")
        for req, mark in t.str_list("requires"):
            kind, _, arg = req.partition(":")
            if kind == "class" and arg not in VMBUS_KINDS:
                t.error("requires", f"unknown VMBus class '{arg}' ({' | '.join(VMBUS_KINDS)})",
                        mark=mark)
        results = t.string("results")
        if parser == "junit" and results is None:
            t.error("results", "parser 'junit' needs 'results': the path of the JUnit file "
                    "the command leaves", mark=t.mark)
        return SuiteTest(
            name=name,
            run=run,
            timeout=t.integer("timeout", 300, 1, 86400),
            parser=parser,
            requires=tuple(requires),
            retries=t.integer("retries", 0, 0, 10),
            results=results,
            kselftest=tuple(kselftest),
            modules=self._modules(t, run),
        )

    def _modules(self, t: MapReader, run: str) -> tuple[str, ...]:
        """``modules:`` of a builtin:module-reload test: the modules it may reload."""
        names = []
        for name, mark in t.str_list("modules"):
            if not _MODULE.fullmatch(name):
                t.error("modules", f"'{name}' is not a module name", mark=mark)
            names.append(name.replace("-", "_"))
        if names and run != "builtin:module-reload":
            t.error("modules", "'modules' goes with run: builtin:module-reload")
        return tuple(names)

    def plans(self) -> None:
        for path in self._yaml_files("plans"):
            r = self._read(path, schema.PLAN)
            if r is None:
                continue
            name = self._name(r, path)
            kernels = self._refs(r, "kernels", "kernel", required=True)
            series = self._refs(r, "series", "series", allow=(NO_SERIES,)) or (NO_SERIES,)
            hosts = self._refs(r, "hosts", "host")
            suites = self._refs(r, "suites", "suite")
            build_only = self._refs(r, "build_only", "kernel")
            for k, mark in r.str_list("build_only"):
                if k not in kernels:
                    r.error("build_only", f"'{k}' is not one of the plan's kernels", mark=mark)
            self.pairings.append((name, r.key_mark("kernels")))
            variants = []
            for v in r.maps("variants"):
                variants.append(Variant(v.req_str("name"),
                                        self._refs(v, "fragments", "fragment")))
                v.done()
            plan = PlanSpec(
                name, path, kernels, series, hosts, suites,
                tuple(variants) or (Variant("default"),),
                baseline=r.boolean("baseline", False),
                gate=r.enum("gate", ("all", "regressions"), default="all") or "all",
                description=r.string("description", default="") or "",
                build_only=build_only,
            )
            r.done()
            self.config.plans[name] = plan

    # -- cross references ----------------------------------------------------------
    def known(self) -> None:
        """configs/known-failures.yaml: failures that do not gate (until they expire)."""
        path = self.root / "known-failures.yaml"
        if not path.is_file():
            return
        r = self._read(path, schema.KNOWN_FAILURES)
        if r is None:
            return
        for e in r.maps("known_failures", required=True):
            pattern = e.req_str("test")
            reason = e.req_str("reason")
            expires = e.string("expires")
            day = None
            if expires is not None:
                try:
                    day = dt.date.fromisoformat(expires)
                except ValueError:
                    e.error("expires", f"'{expires}' is not a date (YYYY-MM-DD)")
            e.done()
            if pattern and reason:
                self.config.known_failures.append(KnownFailure(pattern, reason, day))
        r.done()

    def check_refs(self) -> None:
        tables: dict[str, dict[str, object]] = {
            "kernel": dict(self.config.kernels),
            "fragment": dict(self.config.fragments),
            "series": dict(self.config.series),
            "host": dict(self.config.hosts),
            "suite": dict(self.config.suites),
        }
        folders = {"kernel": "kernels/*.yaml", "fragment": "fragments/*.config",
                   "series": "patches/<name>/", "host": "hosts/*.yaml", "suite": "suites/*.yaml"}
        for ref in self.refs:
            if ref.name not in tables[ref.kind]:
                known = ", ".join(sorted(tables[ref.kind])) or "none"
                self.issues.add(ref.mark, ref.key,
                                f"no {ref.kind} named '{ref.name}' in {folders[ref.kind]} "
                                f"(known: {known})")

    def check_pairings(self) -> None:
        """Every kernel of a plan boots on some host of the plan or is build_only."""
        arch_of = {n: h.arch for n, h in self.config.hosts.items()}
        for name, mark in self.pairings:
            plan = self.config.plans.get(name)
            if plan is None or not plan.hosts:  # hosts may come with --host: inv run checks
                continue
            for k in plan.kernels:
                kernel = self.config.kernels.get(k)
                if kernel is None or k in plan.build_only:
                    continue
                _, why = boot_hosts(k, kernel.arch, plan.hosts, arch_of)
                if why:
                    self.issues.add(mark, "kernels", why)

    def run(self) -> tuple[Config, list[ConfigIssue]]:
        if not self.root.is_dir():
            self.issues.add(Mark(self.show(self.root), 0, 0), "",
                            "configuration directory does not exist (HVLAB_CONFIGS?)")
            return self.config, self.issues.items
        self.fragments()
        self.series()
        self.kernels()
        self.hosts()
        self.suites()
        self.plans()
        self.known()
        self.check_refs()
        self.check_pairings()
        return self.config, sorted(self.issues.items,
                                   key=lambda i: (i.mark.file, i.mark.line, i.mark.col))


def load(ws: Workspace) -> tuple[Config, list[ConfigIssue]]:
    return _Loader(ws).run()


def load_or_raise(ws: Workspace) -> Config:
    config, issues = load(ws)
    if issues:
        lines = "\n".join(f"  {i}" for i in issues[:20])
        more = f"\n  ... and {len(issues) - 20} more" if len(issues) > 20 else ""
        raise UserError(
            f"configuration has {len(issues)} error(s) (run 'inv config.check'):\n{lines}{more}"
        )
    return config

