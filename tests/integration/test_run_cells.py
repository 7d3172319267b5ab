"""`inv run` of a two-cell plan (a series and the unpatched tree) on the fake tree,
booted for real in QEMU (FAKE_BOOT: the image is the Debian kernel, the modules
carry the tree's value file), judged by a suite that reads that file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hvlab.report import view
from tests.conftest import Env, fake_kernel_repo, format_series
from tests.integration.test_bisect import setup_env

pytestmark = pytest.mark.integration

STAGES = {"fetch", "configure", "build", "q.boot", "q.value"}


def setup(env: Env, tmp: Path) -> None:
    """test_bisect's kernel, host and value suite; a series that breaks the value."""
    repo = fake_kernel_repo(tmp / "upstream")
    format_series(repo, env.configs / "patches" / "s", [("drivers/hv/value", "good", "bad")])
    setup_env(env, repo)
    env.write("plans/p.yaml", "kernels: [k]\nseries: [s, none]\nhosts: [q]\n"
              "suites: [value]\nbaseline: true\n")


def suites_by_cell(env: Env) -> dict[str, dict[str, view.SuiteView]]:
    out: dict[str, dict[str, view.SuiteView]] = {}
    for s in view.parse((env.latest / "junit.xml").read_text()):
        out.setdefault(s.cell, {})[s.name.split("/", 1)[1].removeprefix("local.")] = s
    return out


def test_each_cells_testsuites_carry_that_cells_facts_and_known_failures_gate_once(
        env: Env, tmp_path: Path, validate_junit: Any) -> None:
    setup(env, tmp_path)
    done = env.inv("run", "--plan", "p", "--no-ccache", timeout=900)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    validate_junit(env.latest / "junit.xml")
    cells = suites_by_cell(env)
    patched, plain = cells["k+s"], cells["k+none"]
    assert set(patched) == STAGES | {"patch", "check"} and set(plain) == STAGES
    assert patched["q.value"].status == "fail" and plain["q.value"].status == "pass"
    facts = {}
    for label, suites in cells.items():
        if label not in ("k+s", "k+none"):
            continue
        first = suites["build"].properties
        for key in ("commit", "build_id", "kernel_release", "config_hash"):
            assert first.get(key), (label, key)
        facts[label] = {k: first[k] for k in ("commit", "build_id", "kernel_release")}
        for name, suite in suites.items():
            props = suite.properties
            assert {k: props.get(k) for k in facts[label]} == facts[label], (label, name)
            if label == "k+s":
                assert len(props["patchset_hash"]) == 64 and props["series"] == "s"
                assert props["base_commit"] == plain["fetch"].properties["commit"]
            else:
                assert "patchset_hash" not in props, name
    assert facts["k+s"]["commit"] != facts["k+none"]["commit"]
    assert facts["k+s"]["build_id"] != facts["k+none"]["build_id"]

    # the regression is known: neither gate fails on it (the gate comes after them)
    env.write("known-failures.yaml", "known_failures:\n  - test: 'k+s.q.value::value'\n"
              "    reason: the sample series changes the value on purpose\n")
    for gate in ("regressions", "all"):
        done = env.inv("run", "--plan", "p", "--gate", gate, "--no-ccache", timeout=900)
        assert done.returncode == 0, (gate, done.stderr[-3000:])


def test_a_bad_gate_is_bad_input_with_a_run_folder(env: Env, tmp_path: Path,
                                                    validate_junit: Any) -> None:
    setup(env, tmp_path)
    done = env.inv("run", "--plan", "p", "--gate", "bogus")
    assert done.returncode == 2, done.stderr
    assert "hvlab: error: --gate bogus: expected all or regressions" in done.stderr
    assert "Traceback" not in done.stderr
    validate_junit(env.latest / "junit.xml")
    case = env.suite("local.run")["run"]
    assert "--gate bogus" in case.result[0].message
    dry = env.inv("run", "--plan", "p", "--gate", "bogus", "--dry-run")
    assert dry.returncode == 2 and "--gate bogus" in dry.stderr


def test_the_baseline_configuration_is_verified_like_the_tested_one(
        env: Env, tmp_path: Path) -> None:
    """The series drops a dependency; without it the baseline loses the option."""
    repo = fake_kernel_repo(tmp_path / "upstream")
    format_series(repo, env.configs / "patches" / "s",
                  [("Kconfig", "depends on HYPERV && CONNECTOR && NLS", "depends on HYPERV")])
    env.write("fragments/hv.config", "CONFIG_HYPERVISOR_GUEST=y\nCONFIG_HYPERV=y\n"
              "CONFIG_HYPERV_UTILS=y\n")
    env.write("kernels/k.yaml", f"source:\n  git: {repo}\n  ref: main\nconfig:\n"
              "  base: tinyconfig\n  fragments: [hv]\n")
    done = env.inv("build", "--kernel", "k", "--series", "s", "--no-ccache", timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    configure = env.suite("local.configure")
    base = configure["kconfig (baseline without the series): CONFIG_HYPERV_UTILS"]
    assert type(base.result[0]).__name__ == "Skipped"
    assert "HYPERV_UTILS: requested y, got not set" in base.result[0].message
    assert any(n.startswith("kconfig: ") and "verified" in n for n in configure)
    build = env.suite("local.build")
    skipped = build["build: k baseline (without the series)"]
    assert "dropped CONFIG_HYPERV_UTILS" in skipped.result[0].message
