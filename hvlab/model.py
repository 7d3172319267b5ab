"""Frozen dataclasses for everything in ``configs/``.

Built by ``hvlab.config.loader`` after validation; every later stage reads
these and never the YAML.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

BASE_TARGETS = ("defconfig", "tinyconfig", "allnoconfig")


class HostKind(enum.StrEnum):
    """``kind:`` of a host file; each is implemented by one class in hvlab/hosts/."""

    QEMU = "qemu"
    SSH = "ssh"
    HYPERV = "hyperv"


HOST_KINDS = tuple(k.value for k in HostKind)
PARSERS = ("exit-code", "tap", "ktap", "junit")
NO_SERIES = "none"


@dataclass(frozen=True)
class GitSource:
    url: str
    ref: str
    other_refs: tuple[str, ...] = ()  # where to say a series would apply when it does not


@dataclass(frozen=True)
class TarballSource:
    location: str  # a local path (resolved) or an http(s)/file URL
    sha256: str | None = None

    @property
    def is_url(self) -> bool:
        return "://" in self.location


@dataclass(frozen=True)
class PathSource:
    path: Path


Source = GitSource | TarballSource | PathSource


@dataclass(frozen=True)
class KernelConfigSpec:
    base: str  # a BASE_TARGETS name, or an absolute path to a config file
    fragments: tuple[str, ...] = ()

    @property
    def base_is_file(self) -> bool:
        return self.base not in BASE_TARGETS


@dataclass(frozen=True)
class KernelSpec:
    name: str
    file: Path
    source: Source
    arch: str = "x86_64"
    config: KernelConfigSpec = KernelConfigSpec("tinyconfig")
    make_vars: Mapping[str, str] = field(default_factory=dict)
    description: str = ""
    toolchain: str = "gcc"  # gcc or clang (hvlab.build.arches)


@dataclass(frozen=True)
class FragmentOption:
    symbol: str  # without the CONFIG_ prefix
    value: str  # "y", "m", "n" for "is not set", or the literal value
    line: int


@dataclass(frozen=True)
class FragmentSpec:
    name: str
    path: Path
    options: tuple[FragmentOption, ...]


@dataclass(frozen=True)
class SeriesOrigin:
    """Where a series fetched for the run came from (``lore:`` or ``git:``)."""

    arg: str  # as given: lore:<message-id> or git:<repo>#<base>..<head>
    url: str  # the thread's URL, or the repository
    cover: str = ""  # the cover letter ("" when none)
    trailers: tuple[tuple[str, str], ...] = ()  # (patch subject, trailer added from replies)
    notes: tuple[str, ...] = ()  # what b4 warned about
    recipients: tuple[tuple[str, ...], ...] = ()  # per patch: the To/Cc it was sent to
    cached: bool = False  # taken from the cache (--offline)


@dataclass(frozen=True)
class SeriesSpec:
    """A named series: ``configs/patches/<name>/``, a path given on the command
    line, or one fetched for the run (``origin``)."""

    name: str
    path: Path  # a directory or an mbox/patch file
    origin: SeriesOrigin | None = None


@dataclass(frozen=True)
class SshEndpoint:
    address: str
    port: int = 22
    user: str = "root"
    key: Path | None = None
    password_env: str | None = None  # name of an environment variable, never the secret
    host_key: str | None = None  # pinned fingerprint "SHA256:..."
    known_hosts: Path | None = None
    host_key_policy: str = "strict"  # strict | accept-new
    connect_timeout: int = 10
    via: str | None = None  # a host name from configs/hosts used as jump host


@dataclass(frozen=True)
class QemuHost:
    on: str = "local"  # "local" or the name of an ssh host that runs QEMU
    accel: str = "tcg"  # tcg | kvm | auto
    memory: int = 1024  # MiB
    cpus: int = 2
    append: str = ""
    qemu_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class LocalVm:
    """An installed VM that hvlab starts on this machine for an ssh host: QEMU
    with OVMF on a clean overlay of the disk image ``inv image.vm`` builds."""

    image: str = "debian-12"
    memory: int = 1024  # MiB
    cpus: int = 2
    disk_bus: str = "virtio"  # virtio | sata
    accel: str = "tcg"  # tcg | kvm


@dataclass(frozen=True)
class SshHost:
    endpoint: SshEndpoint
    boot_method: str = "auto"  # auto | kexec | grub
    power_cycle: tuple[str, ...] = ()  # a local command (argument list)
    console: tuple[str, ...] = ()  # a local command whose output is the console
    keep_kernels: int = 2
    vm: LocalVm | None = None  # the machine is a VM hvlab starts (address, keys: its own)


@dataclass(frozen=True)
class HypervHost:
    hyperv_host: SshEndpoint
    vm: str
    guest: SshEndpoint
    guest_via_host: bool = False
    checkpoint: str | None = None
    secure_boot: bool | None = None
    ip_timeout: int = 300
    serial_log: bool = True
    release: str = "stop"  # stop | revert | keep
    boot_method: str = "auto"  # auto | kexec | grub, inside the guest
    keep_kernels: int = 2


@dataclass(frozen=True)
class HostSpec:
    name: str
    file: Path
    kind: HostKind
    detail: object  # the kind's own config dataclass (QemuHost, SshHost, HypervHost)
    boot_timeout: int = 120
    iperf_server: str | None = None
    description: str = ""
    scratch_disk: str | None = None  # a guest block device the storage test may overwrite
    spare_nic: str | None = None  # a synthetic NIC of the guest that does not carry SSH
    arch: str = "x86_64"  # of the kernels it boots (a qemu host: its QEMU, machine, console)


@dataclass(frozen=True)
class SuiteTest:
    name: str
    run: str
    timeout: int = 300
    parser: str = "exit-code"
    requires: tuple[str, ...] = ()
    retries: int = 0
    results: str | None = None  # path of the file a junit/ktap test leaves
    kselftest: tuple[str, ...] = ()  # kselftest TARGETS built from the tested tree
    modules: tuple[str, ...] = ()  # builtin:module-reload: the modules it may reload


@dataclass(frozen=True)
class SuiteSpec:
    name: str
    file: Path
    tests: tuple[SuiteTest, ...]
    scripts: Path | None = None
    description: str = ""


@dataclass(frozen=True)
class Variant:
    name: str
    fragments: tuple[str, ...] = ()


@dataclass(frozen=True)
class PlanSpec:
    name: str
    file: Path
    kernels: tuple[str, ...]
    series: tuple[str, ...] = (NO_SERIES,)
    hosts: tuple[str, ...] = ()
    suites: tuple[str, ...] = ()
    variants: tuple[Variant, ...] = (Variant("default"),)
    baseline: bool = False
    gate: str = "all"  # all | regressions
    description: str = ""
    build_only: tuple[str, ...] = ()  # kernels built (and checked), never booted
