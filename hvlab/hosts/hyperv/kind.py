"""The ``hyperv`` host kind: a Linux VM on a Windows Hyper-V host, driven by
PowerShell over SSH (``flow`` boots it, ``client`` speaks to the host)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from hvlab.config.shape import Field, Shape
from hvlab.errors import HvlabError, InfraError, UserError
from hvlab.hosts.base import (
    BootedGuest,
    CellLog,
    ConfigContext,
    HostEnv,
    check_failed,
    endpoint_fields,
)
from hvlab.hosts.hyperv.client import HypervClient
from hvlab.hosts.hyperv.flow import KVP_HINT, boot_hyperv
from hvlab.hosts.machine import BOOT_FIELDS, BOOT_METHODS
from hvlab.hosts.sessions import close_chain, open_session
from hvlab.model import HostSpec, HypervHost, SshEndpoint
from hvlab.results import Status, TestCase
from hvlab.ssh import SshSession

if TYPE_CHECKING:
    from hvlab.config.reader import MapReader


class HypervKind:
    """``kind: hyperv``."""

    SHAPE = Shape({
        "hyperv_host": Field("object", "the Windows Hyper-V host, reached by OpenSSH",
                             required=True, shape=Shape(endpoint_fields())),
        "vm": Field("string", "the VM's exact name (no wildcards: `lab[1]` is that VM)",
                    required=True),
        "guest": Field("object", "the Linux guest; its address comes from KVP when unset",
                       required=True, shape=Shape({
                           **endpoint_fields(address_required=False),
                           "via_host": Field("boolean", "reach the guest through the "
                                             "Hyper-V host"),
                       })),
        "checkpoint": Field("string", "checkpoint to revert to (release: revert)"),
        "secure_boot": Field("boolean", "set the VM's Secure Boot (unset: leave it)"),
        "ip_timeout": Field("integer", "seconds to wait for the guest's address (default 300)",
                            minimum=1, maximum=86400),
        "serial_log": Field("boolean", "capture the VM's COM1 (default true)"),
        "release": Field("enum", "what happens to the VM after the run: stop (default), "
                         "revert or keep", choices=("stop", "revert", "keep")),
        **BOOT_FIELDS,
    })

    def __init__(self, spec: HostSpec, env: HostEnv) -> None:
        assert isinstance(spec.detail, HypervHost)
        self.spec = spec
        self.detail = spec.detail
        self.env = env

    @staticmethod
    def read_config(r: MapReader, path: Path, ctx: ConfigContext) -> HypervHost | None:
        host = r.nested("hyperv_host", lambda m: ctx.endpoint(m, path), required=True)
        vm = r.req_str("vm")  # an exact name: `lab[1]` is that VM, not a pattern
        via_host = False

        def guest(m: MapReader) -> SshEndpoint:
            nonlocal via_host
            via_host = m.boolean("via_host", False)
            return ctx.endpoint(m, path, address_required=False)

        g = r.nested("guest", guest, required=True)
        checkpoint = r.string("checkpoint")
        if checkpoint is not None and any(c in checkpoint for c in "*?[]"):
            r.error("checkpoint", f"'{checkpoint}' has wildcard characters, which "
                    "Get-VMCheckpoint -Name would expand: name exactly one checkpoint")
        secure_boot = r.boolean("secure_boot", False) if r.has("secure_boot") else None
        r.raw("secure_boot")  # absent: leave the VM's firmware setting alone
        ip_timeout = r.integer("ip_timeout", 300, 1, 86400)
        serial = r.boolean("serial_log", True)
        release = r.enum("release", ("stop", "revert", "keep"), default="stop") or "stop"
        if release == "revert" and checkpoint is None:
            r.error("release", "'revert' needs a 'checkpoint' to revert to")
        boot_method = r.enum("boot_method", BOOT_METHODS, default="auto") or "auto"
        keep = r.integer("keep_kernels", 2, 1, 100)
        if host is None or g is None or not vm:
            return None
        return HypervHost(host, vm, g, via_host, checkpoint, secure_boot, ip_timeout, serial,
                          release, boot_method, keep)

    def close(self) -> None:
        pass  # nothing lives between cells

    def stages(self) -> tuple[str, ...]:
        return ("install", "boot")

    @contextmanager
    def boot(self, build: Path, cell: CellLog) -> Iterator[BootedGuest]:
        with boot_hyperv(self.env, self.spec, build, cell) as guest:
            yield guest

    @contextmanager
    def guest(self) -> Iterator[SshSession]:
        """The running VM's guest at the address its KVP daemon reports."""
        win = open_session(self.env.config, self.spec.name)
        try:
            client = HypervClient(win, self.spec.name, self.detail.vm, timeout=120)
            state = client.vm_info().state
            if state != "Running":
                raise UserError(f"host '{self.spec.name}': VM '{self.detail.vm}' is {state}: "
                                "hosts.capture boots nothing; start it first")
            try:
                address = client.wait_ipv4(min(self.detail.ip_timeout, 60))
            except TimeoutError:
                raise InfraError(f"host {self.spec.name}: VM '{self.detail.vm}' reports no "
                                 f"IPv4 address; {KVP_HINT}") from None
            ep = dataclasses.replace(self.detail.guest, address=address)
            guest = SshSession(f"{self.spec.name} guest", ep,
                               jump=win if self.detail.guest_via_host else None)
            try:
                guest.connect()
                yield guest
            finally:
                guest.close()
        finally:
            close_chain(win)

    def check(self) -> TestCase:
        """The Windows host answers SSH and PowerShell, has the Hyper-V module and the VM."""
        name = self.spec.name
        session = open_session(self.env.config, name)
        t0 = time.monotonic()
        client = HypervClient(session, name, self.detail.vm, timeout=120)
        try:
            facts = client.host_facts()
            if not facts.hyperv_module:
                return check_failed(name, f"Windows build {facts.windows_build} has no "
                                    "Hyper-V PowerShell module (Install-WindowsFeature "
                                    "Hyper-V-PowerShell)", time.monotonic() - t0)
            info = client.vm_info()
        except HvlabError as exc:
            return check_failed(name, str(exc), time.monotonic() - t0)
        finally:
            close_chain(session)
        return TestCase(f"host: {name}", Status.PASS,
                        output=f"{facts.windows_caption} (build {facts.windows_build}), "
                        f"Hyper-V module {facts.hyperv_module}; VM '{info.name}' {info.state}, "
                        f"generation {info.generation}, version {info.version}\n",
                        duration=time.monotonic() - t0,
                        properties={"host_key": "verified", "where": session.where})
