"""Build the real Debian 6.1 tree: tinyconfig + hyperv + qemu-guest, with and without
faults.  The first test pays for the cold build; the others rebuild incrementally."""

from __future__ import annotations

import difflib
import json
import tarfile
from pathlib import Path

import junitparser
import pytest

from hvlab.suites import hvtree
from tests.conftest import Env, git
from tests.conftest import case_status as status

pytestmark = pytest.mark.e2e


def suite(env: Env, name: str) -> dict[str, junitparser.TestCase]:
    return env.suite(name)


def diff_series(env: Env, tmp_path: Path, name: str, file: str, old: str, new: str) -> Path:
    """A plain diff against the fetched tree, made now so it always applies."""
    store = env.kernels / "git" / "store.git"
    before = git(store, "show", f"refs/hvlab/kernels/linux-6.1:{file}") + "\n"
    assert old in before, old
    after = before.replace(old, new, 1)
    text = "".join(difflib.unified_diff(before.splitlines(True), after.splitlines(True),
                                        f"a/{file}", f"b/{file}"))
    folder = tmp_path / name
    folder.mkdir()
    (folder / f"0001-{name}.diff").write_text(text)
    return folder


def test_real_build_with_hyperv_sample(real_env: Env) -> None:
    done = real_env.inv("build", "--kernel", "linux-6.1", "--series", "hyperv-sample",
                        timeout=3600)
    assert done.returncode == 0, done.stderr[-3000:]
    configure = suite(real_env, "local.configure")
    assert len(configure) == 2 and all(status(c) == "pass" for c in configure.values())
    assert any(n.startswith("kconfig (baseline without the series): ") for n in configure)
    build = suite(real_env, "local.build")
    assert status(build["build: linux-6.1"]) == "pass"
    assert status(build["build: linux-6.1 baseline (without the series)"]) == "pass"
    meta = json.loads((real_env.latest / "metadata.json").read_text())
    out = real_env.kernels / "builds" / meta["cells"][0]["facts"]["build_id"]
    # what the Hyper-V checks expect comes from this tree: the extraction of the real
    # tree is the table shipped for kernels hvlab did not build, and the build keeps it
    extracted = hvtree.extract(real_env.kernels / "worktrees" / "linux-6.1")
    shipped = hvtree.shipped()
    assert extracted.classes == shipped.classes and extracted.modules == shipped.modules
    assert extracted.no_driver == shipped.no_driver and extracted.clocksources
    if not meta["stages"][-1]["cached"]:  # a build made now records it
        recorded = hvtree.HvExpectations.from_json((out / "hyperv.json").read_text())
        assert recorded.classes == shipped.classes
    release = (out / "kernelrelease").read_text().strip()
    assert release.startswith("6.1.")
    assert (out / "bzImage").stat().st_size > 500_000
    with tarfile.open(out / "modules.tar.gz") as tf:
        modules = {Path(n).name for n in tf.getnames()}
    for module in ("hv_utils.ko", "hv_balloon.ko", "hv_netvsc.ko", "hv_storvsc.ko",
                   "hyperv-keyboard.ko", "hid-hyperv.ko", "pci-hyperv.ko",
                   "hv_sock.ko"):
        assert module in modules, module
    config = (out / "config").read_text()
    assert "CONFIG_HYPERV=y" in config and "CONFIG_VIRTIO_NET=y" in config
    again = real_env.inv("build", "--kernel", "linux-6.1", "--series", "hyperv-sample")
    assert again.returncode == 0 and "build: PASS" in again.stderr and "(cached)" in again.stderr


def test_unused_variable_is_a_new_warning(real_env: Env, tmp_path: Path) -> None:
    series = diff_series(real_env, tmp_path, "unused-var", "drivers/hv/hv_balloon.c",
                         "static int balloon_probe(struct hv_device *dev,\n"
                         "\t\t\t const struct hv_vmbus_device_id *dev_id)\n{\n",
                         "static int balloon_probe(struct hv_device *dev,\n"
                         "\t\t\t const struct hv_vmbus_device_id *dev_id)\n{\n"
                         "\tint hvlab_unused;\n")
    done = real_env.inv("build", "--kernel", "linux-6.1", "--series", str(series),
                        timeout=3600)
    assert done.returncode == 1, done.stderr[-3000:]
    cases = suite(real_env, "local.build")
    new = [n for n in cases if n.startswith("warning: ")]
    assert len(new) == 1, list(cases)
    assert new[0].startswith("warning: drivers/hv/hv_balloon.c:")
    assert new[0].endswith("unused variable 'hvlab_unused'")
    assert status(cases["build: linux-6.1"]) == "pass"


def test_syntax_error_fails_the_build_case(real_env: Env, tmp_path: Path) -> None:
    series = diff_series(real_env, tmp_path, "syntax", "drivers/hv/hv_util.c",
                         "static int util_probe(struct hv_device *dev,\n",
                         "static int util_probe(struct hv_device *dev,\n\tsyntax error\n")
    done = real_env.inv("build", "--kernel", "linux-6.1", "--series", str(series), timeout=3600)
    assert done.returncode == 1, done.stderr[-3000:]
    case = suite(real_env, "local.build")["build: linux-6.1"]
    assert status(case) == "failure"
    assert "drivers/hv/hv_util.c:" in case.result[0].message
