"""Every configuration error is reported as path:line:col: key.path: message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hvlab.config import loader
from hvlab.config.yamlnode import parse
from hvlab.errors import UserError
from hvlab.model import GitSource, TarballSource
from hvlab.workspace import Workspace

pytestmark = pytest.mark.unit

KERNEL = """\
source:
  git: https://example.invalid/linux.git
  ref: v6.1
config:
  base: tinyconfig
"""


def ws_for(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path, tmp_path / "configs", tmp_path / "kernels", tmp_path / "reports")


def write(tmp_path: Path, rel: str, text: str) -> Path:
    path = tmp_path / "configs" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def issues(tmp_path: Path) -> list[str]:
    _, found = loader.load(ws_for(tmp_path))
    return [str(i) for i in found]


def assert_reported(found: list[str], *texts: str) -> None:
    """Each text is part of some reported error."""
    for text in texts:
        assert any(text in f for f in found), (text, found)


def only(tmp_path: Path) -> str:
    found = issues(tmp_path)
    assert len(found) == 1, found
    return found[0]


def test_valid_kernel_loads(tmp_path: Path) -> None:
    write(tmp_path, "kernels/k.yaml", KERNEL)
    config, found = loader.load(ws_for(tmp_path))
    assert found == []
    assert config.kernel("k").source == GitSource("https://example.invalid/linux.git", "v6.1")


def test_unknown_key_names_file_line_col_and_key_path(tmp_path: Path) -> None:
    write(tmp_path, "kernels/k.yaml", KERNEL + "  fragmnets: [a]\n")
    assert only(tmp_path).endswith("kernels/k.yaml:6:3: config.fragmnets: unknown key")


def test_wrong_type(tmp_path: Path) -> None:
    write(tmp_path, "hosts/h.yaml", "kind: qemu\nmemory: lots\n")
    assert only(tmp_path).endswith("hosts/h.yaml:2:9: memory: expected an integer, got 'lots'")


def test_wrong_container_type(tmp_path: Path) -> None:
    write(tmp_path, "kernels/k.yaml", "source: [a, b]\n")
    assert only(tmp_path).endswith("kernels/k.yaml:1:9: source: expected a mapping, got a list")


def test_missing_required_key(tmp_path: Path) -> None:
    write(tmp_path, "kernels/k.yaml", "source:\n  git: https://x.invalid/l.git\n")
    assert only(tmp_path).endswith("kernels/k.yaml:2:3: source.ref: required key is missing")


def test_source_must_be_exactly_one(tmp_path: Path) -> None:
    write(tmp_path, "kernels/k.yaml",
          "source:\n  git: https://x.invalid/l.git\n  ref: main\n  path: /tmp\n")
    assert "exactly one of git, tarball, path is required (found git, path)" in only(tmp_path)


def test_duplicate_keys_are_refused(tmp_path: Path) -> None:
    write(tmp_path, "kernels/k.yaml", KERNEL + "arch: x86_64\narch: arm64\n")
    assert only(tmp_path).endswith("kernels/k.yaml:7:1: duplicate key 'arch' (first at line 6)")


def test_yaml_11_traps_keep_strings(tmp_path: Path) -> None:
    write(tmp_path, "kernels/k.yaml",
          "source:\n  git: https://x.invalid/l.git\n  ref: 5.10\n")
    write(tmp_path, "hosts/h.yaml", "kind: ssh\naddress: 127.0.0.1\nuser: no\nport: 0022\n")
    config, found = loader.load(ws_for(tmp_path))
    assert found == []
    src = config.kernel("k").source
    assert isinstance(src, GitSource) and src.ref == "5.10"
    ep = config.host("h").detail.endpoint  # type: ignore[union-attr]
    assert ep.user == "no" and ep.port == 22


def test_quoted_number_is_not_an_integer(tmp_path: Path) -> None:
    write(tmp_path, "hosts/h.yaml", "kind: qemu\ncpus: '2'\n")
    assert "cpus: expected an integer, got '2'" in only(tmp_path)


def test_boolean_must_be_a_boolean(tmp_path: Path) -> None:
    write(tmp_path, "plans/p.yaml", "kernels: [k]\nbaseline: maybe\n")
    write(tmp_path, "kernels/k.yaml", KERNEL)
    assert "baseline: expected true or false, got 'maybe'" in only(tmp_path)


def test_reference_to_missing_kernel(tmp_path: Path) -> None:
    write(tmp_path, "kernels/k.yaml", KERNEL)
    write(tmp_path, "plans/p.yaml", "kernels: [k, nope]\n")
    assert only(tmp_path).endswith(
        "plans/p.yaml:1:14: kernels: no kernel named 'nope' in kernels/*.yaml (known: k)")


def test_series_none_is_allowed_and_other_names_checked(tmp_path: Path) -> None:
    write(tmp_path, "kernels/k.yaml", KERNEL)
    write(tmp_path, "plans/p.yaml", "kernels: [k]\nseries: [none, missing]\n")
    assert "series: no series named 'missing'" in only(tmp_path)


def test_missing_fragment_reference(tmp_path: Path) -> None:
    write(tmp_path, "kernels/k.yaml", KERNEL + "  fragments: [hyperv]\n")
    assert "config.fragments: no fragment named 'hyperv'" in only(tmp_path)


def test_unknown_base_config(tmp_path: Path) -> None:
    write(tmp_path, "kernels/k.yaml", KERNEL.replace("tinyconfig", "tinyconfg"))
    assert "config.base: 'tinyconfg' is not one of defconfig, tinyconfig, allnoconfig" in \
        only(tmp_path)


def test_bad_enum_value(tmp_path: Path) -> None:
    write(tmp_path, "hosts/h.yaml", "kind: vmware\n")
    assert only(tmp_path).endswith("hosts/h.yaml:1:7: kind: 'vmware' is not one of: qemu, "
                                   "ssh, hyperv")


def test_yaml_syntax_error_has_position(tmp_path: Path) -> None:
    write(tmp_path, "kernels/k.yaml", "source: [a\n")
    assert "kernels/k.yaml:2:1: YAML syntax" in only(tmp_path)


def test_all_errors_are_reported_not_just_the_first(tmp_path: Path) -> None:
    write(tmp_path, "kernels/a.yaml", "sorce: {}\n")
    write(tmp_path, "hosts/h.yaml", "kind: qemu\ncpus: x\nbogus: 1\n")
    found = issues(tmp_path)
    assert len(found) == 4, found  # source missing, sorce unknown, cpus, bogus


def test_fragment_bad_line_names_file_and_line(tmp_path: Path) -> None:
    write(tmp_path, "fragments/f.config",
          "# comment\nCONFIG_A=y\n\nHYPERV=y\n# CONFIG_B is not set\n")
    assert only(tmp_path).endswith("fragments/f.config:4:1: not 'CONFIG_X=value' nor "
                                   "'# CONFIG_X is not set': 'HYPERV=y'")


def test_series_file_naming_missing_patch(tmp_path: Path) -> None:
    write(tmp_path, "patches/s/series", "# order\n\nmissing.patch\n")
    assert only(tmp_path).endswith("patches/s/series:3:1: patch 'missing.patch' does not exist")


def test_suite_unknown_parser_and_requirement(tmp_path: Path) -> None:
    write(tmp_path, "suites/s.yaml",
          "tests:\n  - name: a\n    run: 'true'\n    parser: xml\n    requires: [gpu]\n")
    found = issues(tmp_path)
    assert any("suites/s.yaml:4:13: tests[0].parser: 'xml' is not one of" in f for f in found)
    assert any("suites/s.yaml:5:16: tests[0].requires: unknown requirement 'gpu'" in f
               for f in found)


def test_hyperv_revert_needs_checkpoint(tmp_path: Path) -> None:
    write(tmp_path, "hosts/hv.yaml",
          "kind: hyperv\nhyperv_host: {address: 127.0.0.1}\nvm: v\nguest: {user: root}\n"
          "release: revert\n")
    assert "release: 'revert' needs a 'checkpoint'" in only(tmp_path)


def test_name_key_must_match_file(tmp_path: Path) -> None:
    write(tmp_path, "kernels/k.yaml", "name: other\n" + KERNEL)
    assert "name: 'other' must equal the file name 'k'" in only(tmp_path)


def test_tarball_paths_resolve_relative_to_the_file(tmp_path: Path) -> None:
    write(tmp_path, "kernels/k.yaml", "source:\n  tarball: ../linux.tar.xz\n")
    config, found = loader.load(ws_for(tmp_path))
    assert found == []
    src = config.kernel("k").source
    assert isinstance(src, TarballSource)
    assert src.location == str(tmp_path / "configs" / "linux.tar.xz")


def test_load_or_raise_is_a_user_error(tmp_path: Path) -> None:
    write(tmp_path, "kernels/k.yaml", "bogus: 1\n")
    with pytest.raises(UserError, match="configuration has 2 error"):
        loader.load_or_raise(ws_for(tmp_path))


def test_unknown_name_lookup_lists_known(tmp_path: Path) -> None:
    write(tmp_path, "kernels/k.yaml", KERNEL)
    config = loader.load_or_raise(ws_for(tmp_path))
    with pytest.raises(UserError, match=r"unknown kernel 'x' \(known: k"):
        config.kernel("x")


def test_yamlnode_keeps_raw_scalars() -> None:
    node, problems = parse("a: 0755\nb: off\nc: ~\n", "f.yaml")
    assert problems == []
    assert [v.text for _, v in node.items] == ["0755", "off", "~"]  # type: ignore[union-attr]


def test_shipped_configs_are_valid() -> None:
    repo = Path(__file__).resolve().parents[2]
    ws = Workspace(repo, repo / "configs", repo / "kernels", repo / "reports")
    config, found = loader.load(ws)
    assert [str(i) for i in found] == []
    assert "linux-6.1" in config.kernels and "hyperv-sample" in config.series


def test_hyperv_vm_name_with_wildcard_characters_is_an_exact_name(tmp_path: Path) -> None:
    write(tmp_path, "hosts/h.yaml",
          "kind: hyperv\nhyperv_host: {address: 127.0.0.1}\nvm: 'lab[1]'\nguest: {user: root}\n")
    ws = Workspace(tmp_path, tmp_path / "configs", tmp_path / "kernels", tmp_path / "reports")
    config, found = loader.load(ws)
    assert [str(i) for i in found] == []
    assert config.hosts["h"].detail.vm == "lab[1]"  # type: ignore[attr-defined]


def test_suite_unknown_builtin_parser_and_class(tmp_path: Path) -> None:
    write(tmp_path, "suites/s.yaml",
          "tests:\n  - name: a\n    run: builtin:nope\n  - name: b\n    run: x\n"
          "    parser: xml\n  - name: c\n    run: x\n    requires: [class:gpu]\n")
    assert_reported(issues(tmp_path),
                    "s.yaml:3:5: tests[0].run: unknown built-in test 'builtin:nope'",
                    "s.yaml:6:13: tests[1].parser:",
                    "s.yaml:9:16: tests[2].requires: unknown VMBus class 'gpu'")


def test_kselftest_test_loads_as_a_tap_test(tmp_path: Path) -> None:
    write(tmp_path, "suites/s.yaml",
          "tests:\n  - name: ksft\n    kselftest: [size, net/forwarding]\n    timeout: 600\n")
    config, found = loader.load(ws_for(tmp_path))
    assert found == []
    test = config.suite("s").tests[0]
    assert test.kselftest == ("size", "net/forwarding")
    assert test.parser == "tap" and test.timeout == 600


def test_kselftest_bad_targets_and_keys_that_do_not_go_with_it(tmp_path: Path) -> None:
    write(tmp_path, "suites/s.yaml",
          "tests:\n  - name: a\n    kselftest: [size, ../etc, '-x']\n    run: 'true'\n"
          "  - name: b\n    kselftest: []\n")
    found = issues(tmp_path)
    assert_reported(found,
                    "s.yaml:3:23: tests[0].kselftest: '../etc' is not a kselftest target",
                    "s.yaml:3:31: tests[0].kselftest: '-x' is not a kselftest target",
                    "s.yaml:4:5: tests[0].run: 'run' does not go with 'kselftest'",
                    "s.yaml:6:5: tests[1].kselftest: an empty list")
    assert not any("unknown key" in f for f in found), found


def test_scratch_disk_must_be_a_device_path(tmp_path: Path) -> None:
    write(tmp_path, "hosts/q.yaml", "kind: qemu\nscratch_disk: /dev/sdb\n")
    config, found = loader.load(ws_for(tmp_path))
    assert found == [] and config.host("q").scratch_disk == "/dev/sdb"
    write(tmp_path, "hosts/q.yaml", "kind: qemu\nscratch_disk: 'sdb; rm -rf /'\n")
    assert only(tmp_path).endswith(
        "hosts/q.yaml:2:1: scratch_disk: 'sdb; rm -rf /' is not a device path (/dev/<name>)")


LAUGHS = "".join([
    "source: {git: https://example.invalid/linux.git, ref: v6.1}\n",
    "config: {base: tinyconfig}\n",
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n',
    *(f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},"
      f"*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},"
      f"*{chr(97 + i)}]\n" for i in range(8)),
])


def test_nested_yaml_aliases_are_refused_at_their_line(tmp_path: Path) -> None:
    """The classic billion laughs: 9**9 strings once expanded.  In a child process
    with a deadline, so that an expanding loader fails the test instead of
    hanging it."""
    write(tmp_path, "kernels/k.yaml", LAUGHS)
    code = ("import sys; from pathlib import Path; from hvlab.config import loader; "
            "from hvlab.workspace import Workspace; r = Path(sys.argv[1]); "
            "ws = Workspace(r, r / 'configs', r / 'kernels', r / 'reports'); "
            "print(*loader.load(ws)[1], sep='\\n')")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                          text=True, timeout=30, check=True)
    assert done.stdout.strip().endswith(
        "kernels/k.yaml:4:8: YAML alias '*a' refused: hvlab configs use no anchors or "
        "aliases (write the value out)"), done.stdout


def test_a_config_file_larger_than_any_config_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "kernels/k.yaml", KERNEL + "# padding\n" * 200_000)
    assert "kernels/k.yaml:1:1: 2000" in only(tmp_path)
    assert "larger than any hvlab config should be" in only(tmp_path)


def test_deep_nesting_is_one_error_not_a_recursion_traceback(tmp_path: Path) -> None:
    write(tmp_path, "kernels/k.yaml", KERNEL + "x: " + "[" * 3000 + "]" * 3000 + "\n")
    assert only(tmp_path).endswith("kernels/k.yaml:6:67: nesting deeper than 64 levels")


def test_a_local_vm_host_reads_its_vm_keys_and_defaults_to_grub(tmp_path: Path) -> None:
    write(tmp_path, "hosts/vm.yaml", "kind: ssh\nvm:\n  memory: 2048\n  disk_bus: sata\n")
    config, found = loader.load(ws_for(tmp_path))
    assert not found, [str(i) for i in found]
    detail = config.host("vm").detail
    assert detail.vm is not None and detail.vm.memory == 2048  # type: ignore[union-attr]
    assert detail.vm.disk_bus == "sata" and detail.vm.cpus == 2  # type: ignore[union-attr]
    assert detail.boot_method == "grub"  # type: ignore[union-attr]


def test_a_local_vm_host_refuses_the_keys_hvlab_sets_for_its_vm(tmp_path: Path) -> None:
    write(tmp_path, "hosts/vm.yaml",
          "kind: ssh\naddress: 10.0.0.1\npower_cycle: [reset]\nvm:\n  disk_bus: scsi\n")
    found = issues(tmp_path)
    assert len(found) == 3, found  # one line per key, no "unknown key" on top
    assert_reported(found, "vm.yaml:2:1: address: not with vm:",
                    "vm.yaml:3:1: power_cycle: not with vm:",
                    "vm.disk_bus: 'scsi' is not one of: virtio, sata")


def test_a_plan_kernel_no_plan_host_boots_is_reported_at_its_kernels_key(
        tmp_path: Path) -> None:
    write(tmp_path, "kernels/k.yaml", KERNEL)
    write(tmp_path, "kernels/a.yaml", KERNEL.replace("config:", "arch: arm64\nconfig:"))
    write(tmp_path, "hosts/q.yaml", "kind: qemu\n")
    write(tmp_path, "hosts/qa.yaml", "kind: qemu\narch: arm64\n")
    write(tmp_path, "plans/p.yaml", "description: x\nkernels: [k, a]\nhosts: [q]\n")
    assert only(tmp_path).endswith(
        "plans/p.yaml:2:1: kernels: kernel 'a' is arm64 and no host boots it (hosts: q "
        "(x86_64)): add a qemu host with arch: arm64, or list the kernel under build_only")
    write(tmp_path, "plans/p.yaml", "kernels: [k, a]\nhosts: [q, qa]\n")
    assert issues(tmp_path) == []
    write(tmp_path, "plans/p.yaml", "kernels: [k, a]\nhosts: [q]\nbuild_only: [a, z]\n")
    assert_reported(issues(tmp_path), "build_only: no kernel named 'z'",
                    "build_only: 'z' is not one of the plan's kernels")
    write(tmp_path, "plans/p.yaml", "kernels: [k, a]\nhosts: [q]\nbuild_only: [a]\n")
    assert issues(tmp_path) == []
    # without hosts the plan takes them from --host: inv run judges it (test_pipeline)
    write(tmp_path, "plans/p.yaml", "kernels: [k, a]\nbuild_only: [a]\n")
    assert issues(tmp_path) == []
    write(tmp_path, "hosts/qa.yaml", "kind: qemu\narch: sparc\n")
    assert_reported(issues(tmp_path), "hosts/qa.yaml:2:7: arch:")
