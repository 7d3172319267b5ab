"""``kind:`` -> the class that implements it.  A new kind is one module and one
line here; modules are imported when a host of their kind is first used."""

from __future__ import annotations

import importlib

from hvlab.errors import UserError
from hvlab.hosts.base import Host, HostEnv, HostKindClass
from hvlab.model import HostKind, HostSpec

_KINDS: dict[HostKind, str] = {
    HostKind.QEMU: "hvlab.hosts.qemu:QemuKind",
    HostKind.SSH: "hvlab.hosts.machine:SshKind",
    HostKind.HYPERV: "hvlab.hosts.hyperv.kind:HypervKind",
}


def kind_class(kind: HostKind) -> HostKindClass:
    module, _, name = _KINDS[kind].partition(":")
    cls: HostKindClass = getattr(importlib.import_module(module), name)
    return cls


def host(spec: HostSpec, env: HostEnv) -> Host:
    """The host object for a configured host."""
    try:
        kind = HostKind(spec.kind)
    except ValueError:
        raise UserError(f"host '{spec.name}' is of kind '{spec.kind}': hvlab boots on "
                        f"{', '.join(k.value for k in HostKind)} hosts") from None
    return kind_class(kind)(spec, env)
