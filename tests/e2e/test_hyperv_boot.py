"""The Done-when of the hyperv kind: `inv boot --kernel linux-6.1 --series
hyperv-sample --host <simulated Hyper-V host>` builds the real tree, installs
the build in the simulator's VM over SSH, kexecs into it and verifies it."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from hvlab.workspace import Workspace
from tests.conftest import REPO, Env
from tests.conftest import case_status as status
from tests.hyperv_lab import hyperv_lab

pytestmark = pytest.mark.e2e


def test_build_boots_on_the_simulated_hyperv_vm(real_env: Env, tmp_path: Path) -> None:
    env = dataclasses.replace(real_env, configs=real_env.root / "configs-hyperv")
    shutil.rmtree(env.configs, ignore_errors=True)
    shutil.copytree(REPO / "configs", env.configs)
    ws = Workspace(env.root, env.configs, env.kernels, env.reports)
    with hyperv_lab(tmp_path / "lab", ws) as lab:
        env.write("hosts/hv-gen2.yaml", lab.host_yaml(
            checkpoint="clean", secure_boot="off", release="stop", boot_timeout=180))
        done = env.inv("boot", "--kernel", "linux-6.1", "--series", "hyperv-sample",
                       "--host", "hv-gen2", timeout=3600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        boot = env.suite("hv-gen2.boot")
        assert status(boot["boot: hv-gen2"]) == "pass"
        release = boot["kernel release"].system_out.strip()
        assert release.startswith("6.1.") and release.endswith("+") and release != lab.release
        assert status(boot["integration: heartbeat"]) == "pass"
        serial = (env.latest / "logs" / "console-hv-gen2.log").read_text(errors="replace")
        assert f"Linux version {release}" in serial
        assert lab.vm_state()["state"] == "Off"
