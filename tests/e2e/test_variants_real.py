"""The shipped Hyper-V config variants on the real Debian 6.1 tree: the
variants plan (drivers =m and =y, without PCI_HYPERV, without NET, with
AMD_MEM_ENCRYPT) configures and builds what the series touches in each, with
every variant's options verified in its final .config; a variant asking for
an option this tree does not have (HYPERV_VTL_MODE, Linux 6.4+) or keeping
unset one that another option selects fails its configure case saying why."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import yaml

from hvlab.build import kconfig
from tests.conftest import REPO, Env
from tests.conftest import case_status as status

pytestmark = pytest.mark.e2e

SHIPPED = ["modules", "builtin", "no-pci", "no-net", "sev"]
CELL = "linux-6.1+hyperv-sample+{}/local.{}"


def _final_config(env: Env, variant: str) -> dict[str, str]:
    """The final .config of a variant's series build, from the build's record."""
    meta = json.loads((env.latest / "metadata.json").read_text())
    for cell in meta["cells"]:
        facts = cell["facts"]
        if facts.get("build_id") and cell["label"].endswith(f"+{variant}"):
            return kconfig.parse_dotconfig(
                (env.kernels / "builds" / facts["build_id"] / "config").read_text())
    raise AssertionError(f"no build of variant {variant} in {meta['cells']}")


def test_the_shipped_variants_build_and_bad_ones_say_why(real_env: Env) -> None:
    env = dataclasses.replace(real_env, configs=real_env.root / "configs-variants")
    shutil.rmtree(env.configs, ignore_errors=True)
    shutil.copytree(REPO / "configs", env.configs)
    env.write("fragments/no-reporting.config", "# CONFIG_PAGE_REPORTING is not set\n")
    plan = yaml.safe_load((env.configs / "plans" / "variants.yaml").read_text())
    plan["variants"] += [{"name": "vtl", "fragments": ["hyperv-vtl"]},
                         {"name": "no-reporting", "fragments": ["no-reporting"]}]
    env.write("plans/variants.yaml", yaml.safe_dump(plan))
    done = env.inv("run", "--plan", "variants", "--checks", "none", timeout=3600)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]

    for variant in SHIPPED:
        configure = env.suite(CELL.format(variant, "configure"))
        assert all(status(c) == "pass" for c in configure.values()), (variant, configure)
        build = env.suite(CELL.format(variant, "build"))
        assert status(build["build: linux-6.1"]) == "pass", (variant, build)
        assert env.suite_properties(CELL.format(variant, "build"))["build_scope"] == \
            "touched only: drivers/hv/", variant
    # what each variant is for holds in its final .config
    assert _final_config(env, "modules")["HYPERV_NET"] == "m"
    builtin = _final_config(env, "builtin")
    assert builtin["HYPERV_NET"] == "y" and builtin["FB_HYPERV"] == "y"
    assert _final_config(env, "no-pci").get("PCI_HYPERV", "n") == "n"
    no_net = _final_config(env, "no-net")
    assert no_net.get("NET", "n") == "n" and no_net["HYPERV"] == "y"
    assert _final_config(env, "sev")["AMD_MEM_ENCRYPT"] == "y"

    vtl = env.suite(CELL.format("vtl", "configure"))["kconfig: CONFIG_HYPERV_VTL_MODE"]
    assert status(vtl) == "failure"
    assert "no such symbol in this tree's Kconfig files" in vtl.result[0].message
    selected = env.suite(CELL.format("no-reporting", "configure"))[
        "kconfig: CONFIG_PAGE_REPORTING"]
    assert status(selected) == "failure"
    assert "requested not set, got y (selected by HYPERV_BALLOON)" in \
        selected.result[0].message
    skipped = env.suite(CELL.format("vtl", "build"))["build"]
    assert status(skipped) == "skipped" and "'configure' did not pass" in \
        skipped.result[0].message

