"""What the tested kernel tree says a Hyper-V guest should show: the VMBus class
GUIDs (include/linux/hyperv.h), which driver serves each (the drivers' id
tables), the module each driver is in (their Makefiles), the devices Linux
leaves alone on purpose (vmbus_drv.c's unsupported list), and the
clocksources of drivers/clocksource/hyperv_timer.c.

``extract`` reads a tree (text parsing of the files ``git grep`` picks; run
when a build is made and kept beside it as ``hyperv.json``).  ``shipped()`` is the same extraction
recorded from Debian's linux-source-6.1, used when nothing better is known
(a --prebuilt kernel, a capture from elsewhere): it says so in its source.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hvlab.errors import InfraError
from hvlab.proc import capture

# macro -> the name suites use (``requires: [class:network]``)
KINDS = {
    "HV_NIC_GUID": "network", "HV_IDE_GUID": "ide", "HV_SCSI_GUID": "scsi",
    "HV_SHUTDOWN_GUID": "shutdown", "HV_TS_GUID": "timesync",
    "HV_HEART_BEAT_GUID": "heartbeat", "HV_KVP_GUID": "kvp", "HV_DM_GUID": "dynamic-memory",
    "HV_MOUSE_GUID": "mouse", "HV_KBD_GUID": "keyboard", "HV_VSS_GUID": "vss",
    "HV_SYNTHVID_GUID": "video", "HV_SYNTHFC_GUID": "fibre-channel",
    "HV_FCOPY_GUID": "fcopy", "HV_ND_GUID": "network-direct",
    "HV_PCIE_GUID": "pci-passthrough", "HV_AVMA1_GUID": "avma", "HV_AVMA2_GUID": "avma",
    "HV_RDV_GUID": "rdv", "HV_IMC_GUID": "imc",
}

_GUID = re.compile(r"#define\s+(HV_\w+_GUID)\s*\\\s*\.guid\s*=\s*GUID_INIT\(([^)]*)\)", re.S)
_TABLE = re.compile(r"struct\s+hv_vmbus_device_id\s+(\w+)\s*\[\s*\]\s*=\s*\{(.*?)\n\s*\};",
                    re.S)
_DRIVER = re.compile(r"struct\s+hv_driver\s+\w+\s*=\s*\{(.*?)\n\s*\};", re.S)
_NAME = re.compile(r"\.name\s*=\s*(?:\"([^\"]+)\"|(KBUILD_MODNAME))")
_IDS = re.compile(r"\.id_table\s*=\s*(\w+)")
_UNSUPPORTED = re.compile(r"(\w*unsupported\w*)\s*\[\s*\]\s*=\s*\{(.*?)\n\s*\};", re.S)
_CLOCK = re.compile(r"\.name\s*=\s*\"(hyperv_clocksource[^\"]*)\"")


@dataclass(frozen=True)
class DeviceClass:
    guid: str
    macro: str
    kind: str
    drivers: tuple[str, ...]  # vmbus driver names (as in /sys/bus/vmbus/drivers/)


@dataclass(frozen=True)
class HvExpectations:
    classes: dict[str, DeviceClass]  # by GUID, lower case, no braces
    no_driver: tuple[str, ...] = ()  # GUIDs hosts offer that Linux leaves alone on purpose
    hvsock_drivers: tuple[str, ...] = ()  # serve hv_sock channels (a class GUID per service)
    generic_drivers: tuple[str, ...] = ()  # empty id table: bound by an admin (uio_hv_generic)
    modules: dict[str, str] = field(default_factory=dict)  # vmbus driver -> module name
    clocksources: tuple[str, ...] = ()  # hyperv_timer.c's
    tsc_invariant: bool = False  # the tree prefers tsc when the host offers invariant TSC
    source: str = ""

    def kind(self, guid: str) -> str:
        known = self.classes.get(guid)
        return known.kind if known else ""

    def guids_of(self, kind: str) -> list[str]:
        return [g for g, c in self.classes.items() if c.kind == kind]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> HvExpectations:
        data = json.loads(text)
        classes = {g: DeviceClass(c["guid"], c["macro"], c["kind"], tuple(c["drivers"]))
                   for g, c in data["classes"].items()}
        return cls(classes, tuple(data["no_driver"]), tuple(data["hvsock_drivers"]),
                   tuple(data["generic_drivers"]), dict(data["modules"]),
                   tuple(data["clocksources"]), bool(data["tsc_invariant"]),
                   str(data["source"]))


def guid_from_init(args: str) -> str:
    """``0xf8615163, 0xdf3e, ...`` (GUID_INIT's eleven numbers) as a GUID string."""
    n = [int(x, 16) for x in re.findall(r"0x[0-9a-fA-F]+", args)]
    if len(n) != 11:
        raise ValueError(f"GUID_INIT needs 11 numbers, got {len(n)}")
    tail = "".join(f"{b:02x}" for b in n[3:])
    return f"{n[0]:08x}-{n[1]:04x}-{n[2]:04x}-{tail[:4]}-{tail[4:]}"


def module_of(source: Path) -> str:
    """The module a C file is built into, from its directory's Makefile (kbuild's
    ``obj-... += name.o`` or ``name-y := file.o ...``), '-' as '_' like
    KBUILD_MODNAME."""
    stem = source.stem
    try:
        text = (source.parent / "Makefile").read_text(errors="replace").replace("\\\n", " ")
    except OSError:
        return stem.replace("-", "_")
    for line in text.splitlines():
        m = re.match(r"\s*([\w-]+)-(?:y|objs|\$\([^)]*\))\s*[:+]?=(.*)", line)
        if m and m.group(1) != "obj" and \
                re.search(rf"(^|\s){re.escape(stem)}\.o(\s|$)", m.group(2)):
            return m.group(1).replace("-", "_")
    return stem.replace("-", "_")


_MARKS = (b"hv_vmbus_device_id", b"struct hv_driver", b"unsupported_devs")


def _candidates(tree: Path) -> list[Path] | None:
    """The files ``git grep`` finds with a mark, in a git checkout (a build's
    worktree: a quarter of the time of reading 20 000 files); None elsewhere."""
    if not (tree / ".git").exists():
        return None
    argv = ["git", "grep", "-l", "-F", *[a for m in _MARKS for a in ("-e", m.decode())],
            "--", "drivers/*.c", "net/*.c"]
    try:
        done = capture(argv, cwd=tree, timeout=120)
    except InfraError:
        return None
    if done.returncode not in (0, 1):  # 1: nothing found
        return None
    return sorted(tree / line for line in done.stdout.decode(errors="replace").splitlines()
                  if line)


def _drivers(tree: Path) -> list[tuple[Path, str]]:
    """The C files of drivers/ and net/ that declare a VMBus driver or the
    unsupported list: those git grep names, else every file read as bytes
    and only the few that match decoded."""
    found = _candidates(tree)
    if found is not None:
        return [(p, p.read_text(errors="replace")) for p in found if p.is_file()]
    out = []
    for sub in ("drivers", "net"):
        base = tree / sub
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*.c")):
            try:
                data = path.read_bytes()
            except OSError:
                continue
            if b"hv_" in data and any(mark in data for mark in _MARKS):
                out.append((path, data.decode(errors="replace")))
    return out


def extract(tree: Path, source: str = "") -> HvExpectations:
    header = (tree / "include/linux/hyperv.h").read_text(errors="replace")
    macros = {m.group(1): guid_from_init(m.group(2)) for m in _GUID.finditer(header)}
    served: dict[str, list[str]] = {}
    no_driver: list[str] = []
    hvsock: list[str] = []
    generic: list[str] = []
    modules: dict[str, str] = {}
    for path, text in _drivers(tree):
        for m in _UNSUPPORTED.finditer(text):  # channel_mgmt.c: offered, left alone
            no_driver += [macros[u] for u in re.findall(r"\b(HV_\w+_GUID)\b", m.group(2))
                          if u in macros]
        tables = {m.group(1): re.findall(r"\b(HV_\w+_GUID)\b", m.group(2))
                  for m in _TABLE.finditer(text)}
        for d in _DRIVER.finditer(text):
            body = d.group(1)
            named = _NAME.search(body)
            if named is None:
                continue
            driver = named.group(1) or module_of(path)
            modules[driver] = module_of(path)
            if re.search(r"\.hvsock\s*=\s*true", body):
                hvsock.append(driver)
            ids = _IDS.search(body)
            used = tables.get(ids.group(1), []) if ids else []
            if not used and not re.search(r"\.hvsock\s*=\s*true", body):
                generic.append(driver)
            for macro in used:
                served.setdefault(macro, []).append(driver)
    classes = {}
    for macro, guid in macros.items():
        kind = KINDS.get(macro) or macro.removeprefix("HV_").removesuffix("_GUID").lower()
        classes[guid] = DeviceClass(guid, macro, kind, tuple(sorted(set(served.get(macro, [])))))
    timer = tree / "drivers/clocksource/hyperv_timer.c"
    timer_text = timer.read_text(errors="replace") if timer.is_file() else ""
    return HvExpectations(classes, tuple(dict.fromkeys(no_driver)), tuple(sorted(hvsock)),
                          tuple(sorted(generic)), dict(sorted(modules.items())),
                          tuple(dict.fromkeys(_CLOCK.findall(timer_text))),
                          "HV_ACCESS_TSC_INVARIANT" in timer_text, source or str(tree))


SHIPPED = Path(__file__).with_name("hyperv-6.1.json")


def shipped() -> HvExpectations:
    """The extraction from Debian's linux-source-6.1 (see its ``source``)."""
    return HvExpectations.from_json(SHIPPED.read_text())


def for_build(build: Path | None) -> HvExpectations:
    """The booted build's own expectations when it recorded them, else shipped()."""
    if build is not None and (build / "hyperv.json").is_file():
        return HvExpectations.from_json((build / "hyperv.json").read_text())
    return shipped()
