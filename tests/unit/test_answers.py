"""report.mail and report.patchwork mappings (pure), on JUnit views."""

from __future__ import annotations

import pytest

from hvlab.report import mail, patchwork
from hvlab.report.seriesrecord import PatchRecord, SeriesRecord
from hvlab.report.view import CaseView, SuiteView
from hvlab.results import Status

pytestmark = pytest.mark.unit

P1 = PatchRecord(1, "hv: one", "[PATCH 1/2] hv: one", "A Dev <a@dev.example>", "m-1@x",
                 ("linux-hyperv@vger.kernel.org", "a@dev.example"), "c1" * 20)
P2 = PatchRecord(2, "hv: two", "[PATCH 2/2] hv: two", "A Dev <a@dev.example>", "m-2@x",
                 ("linux-hyperv@vger.kernel.org",), "c2" * 20)
RECORD = SeriesRecord("linux-6.1", "linux-6.1", "s", "lore:m-0@x",
                      "https://lore.kernel.org/all/m-0@x/t.mbox.gz", "[PATCH 0/2] hv", "m-0@x",
                      "b" * 40, "c2" * 20, (P1, P2))


def suites(*extra: SuiteView) -> list[SuiteView]:
    return [
        SuiteView("local.patch", (CaseView("hv: one", "", Status.PASS),
                                  CaseView("hv: two", "", Status.PASS),
                                  CaseView("checkpatch: hv: two", "", Status.PASS,
                                           "warning: 0 errors, 1 warnings, 0 checks"))),
        SuiteView("local.check", (
            CaseView("sparse: hv: one", "", Status.FAIL, "drivers/hv/a.c:3: symbol 'f' was "
                     "not declared. Should it be static?",
                     "drivers/hv/a.c:3: symbol 'f' was not declared. Should it be static?"),
            CaseView("kernel-doc: hv: one", "", Status.SKIP, "no .c"),
            CaseView("sparse: hv: two", "", Status.PASS))),
        SuiteView("local.build", (CaseView("build: linux-6.1", "", Status.PASS),)),
        *extra]


TESTED = mail.Tested("r1", "inv build --kernel linux-6.1 --series lore:m-0@x",
                     {"checks": "default"}, "gcc 12.2", "x86_64")


def test_a_reply_per_patch_with_findings_and_none_for_the_clean_build() -> None:
    mails = mail.compose(RECORD, suites(), TESTED, "CI <ci@example.com>")
    assert [m["In-Reply-To"] for m in mails] == ["<m-1@x>", "<m-2@x>"]
    one, two = (m.get_content() for m in mails)
    assert ">> drivers/hv/a.c:3: symbol 'f' was not declared" in one
    assert "make O=<build dir> ARCH=x86_64 C=2 drivers/hv/a.o" in one
    assert "?? 0 errors, 1 warnings, 0 checks" in two  # a warning does not fail
    assert mails[0]["Cc"] == "linux-hyperv@vger.kernel.org"  # the author is To:


def test_a_failed_boot_answers_the_cover_letter() -> None:
    boot = SuiteView("q.boot", (CaseView("boot: q", "", Status.FAIL, "the kernel panicked"),))
    clean = [s for s in suites(boot) if s.name != "local.check"]
    mails = mail.compose(RECORD, clean, TESTED, "CI <ci@example.com>")
    assert len(mails) == 2  # patch 2's checkpatch warning, then the series
    series = mails[-1]
    assert series["In-Reply-To"] == "<m-0@x>" and series["Subject"] == "Re: [PATCH 0/2] hv"
    assert ">> the kernel panicked" in series.get_content()


def test_nothing_found_is_one_reply_to_the_cover() -> None:
    quiet = [SuiteView("local.patch", (CaseView("hv: one", "", Status.PASS),
                                       CaseView("hv: two", "", Status.PASS)))]
    mails = mail.compose(RECORD, quiet, TESTED, "CI <ci@example.com>")
    assert len(mails) == 1 and "every check and test passed" in mails[0].get_content()


def test_patchwork_checks() -> None:
    assert patchwork.context("W=1") == "hvlab-w1"
    assert patchwork.context("get_maintainer") == "hvlab-get-maintainer"
    assert patchwork.context("kernel-doc") == "hvlab-kernel-doc"
    one = {c.context: c.state for c in patchwork.patch_checks(P1, suites())}
    assert one == {"hvlab-apply": "success", "hvlab-sparse": "fail"}  # a skip is not posted
    two = {c.context: c.state for c in patchwork.patch_checks(P2, suites())}
    assert two == {"hvlab-apply": "success", "hvlab-checkpatch": "warning",
                   "hvlab-sparse": "success"}
    whole = patchwork.series_checks(RECORD, suites())
    assert [(c.context, c.state) for c in whole] == [("hvlab-build", "success")]
    assert len(patchwork._short("x" * 500)) == patchwork.MAX_DESCRIPTION
