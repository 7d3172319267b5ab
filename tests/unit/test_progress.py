"""Progress output: a live tail on a terminal, plain lines without one."""

from __future__ import annotations

import io
import re

import pytest

from hvlab.progress import Progress
from hvlab.results import Status

pytestmark = pytest.mark.unit


def test_terminal_shows_stage_elapsed_and_a_live_tail() -> None:
    out = io.StringIO()
    p = Progress(out, tty=True)
    p.stage("build", "linux-6.1+hyperv-sample")
    p.log_line("  CC      drivers/hv/vmbus_drv.o \x1b[31m")
    p.done("build", Status.PASS, 12.0)
    text = out.getvalue()
    assert re.search(r"\[00:0\d\] build linux-6.1\+hyperv-sample \.\.\.\n", text)
    assert "\r\x1b[2K[00:00] build linux-6.1+hyperv-sample | CC drivers/hv/vmbus_drv.o" in text
    assert "\x1b[31m" not in text  # the log's own escapes never reach the terminal
    assert text.rstrip().endswith("build: PASS in 12.0 s")


def test_no_tty_plain_timestamped_lines_without_control_characters() -> None:
    out = io.StringIO()
    p = Progress(out, tty=False)
    p.stage("boot", "on local-qemu")
    p.log_line("noise that CI logs do not need")
    p.done("boot", Status.FAIL, 3.2)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert all(re.fullmatch(r"\[\d\d:\d\d:\d\d\] .*", line) for line in lines)
    assert "\x1b" not in out.getvalue() and "\r" not in out.getvalue()
    assert lines[1].endswith("boot: FAIL in 3.2 s")


def test_quiet_prints_nothing() -> None:
    out = io.StringIO()
    p = Progress(out, quiet=True, tty=True)
    p.stage("build")
    p.log_line("x")
    p.info("y")
    assert out.getvalue() == ""
