"""Which hosts boot which kernels: a host boots the kernels of its ``arch:``
(x86_64 unless it says otherwise), and a plan's kernel is booted on each of
the plan's hosts of its arch, or built only when the plan lists it under
``build_only``.  Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from hvlab.config.tables import Config


@dataclass(frozen=True)
class Arches:
    """The arch of each kernel and host a matrix may name (x86_64 when unnamed)."""

    kernels: Mapping[str, str] = field(default_factory=dict)
    hosts: Mapping[str, str] = field(default_factory=dict)


def arches_of(config: Config) -> Arches:
    return Arches({n: k.arch for n, k in config.kernels.items()},
                  {n: h.arch for n, h in config.hosts.items()})


def boot_hosts(kernel: str, kernel_arch: str, hosts: Sequence[str],
               arch_of: Mapping[str, str]) -> tuple[list[str], str]:
    """(the hosts of ``hosts`` that boot ``kernel``, why none does: "" when some do)."""
    found = [h for h in hosts if arch_of.get(h, "x86_64") == kernel_arch]
    if found:
        return found, ""
    if not hosts:
        return [], (f"kernel '{kernel}' is not built only and the plan has no hosts to boot "
                    "it: add hosts, or list the kernel under build_only")
    others = ", ".join(f"{h} ({arch_of.get(h, 'x86_64')})" for h in hosts)
    return [], (f"kernel '{kernel}' is {kernel_arch} and no host boots it (hosts: {others}): "
                f"add a qemu host with arch: {kernel_arch}, or list the kernel under "
                "build_only")
