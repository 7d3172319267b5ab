"""report.mail and report.patchwork: a run on a series that came from a lore
thread, answered where maintainers look: replies to the patches (written, and
sent to a local SMTP server, aiosmtpd) and checks on patchwork (the stand-in
tests/patchwork_server.py)."""

from __future__ import annotations

import email
import email.policy
import re
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from hvlab.hosts.qemu_guest import free_port
from tests.conftest import Env
from tests.integration.test_build import fake_kernel
from tests.integration.test_checks import SOB, commit_series
from tests.lore_server import lore_server, series_thread
from tests.patchwork_server import patchwork_server

pytestmark = pytest.mark.integration
SENDER = "hvlab CI <ci@hvlab.invalid>"
PASSWORD = "smtp-secret-4f1d"
TOKEN = "pw-token-9a8b7c"
ONE = "hv: add a helper nobody declares"
TWO = "hv: a comment"


@pytest.fixture
def run_dir(env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`inv build` of a two-patch series from a lore thread: patch 1 fails
    sparse and W=1, patch 2 passes every check."""
    upstream = fake_kernel(env, tmp_path)
    patches = commit_series(upstream, tmp_path / "s", [
        ("drivers/hv/vmbus_drv.c", "int vmbus_init(void)",
         "int hv_undeclared_helper(void)\n{\n\treturn 1;\n}\n\nint vmbus_init(void)",
         ONE + SOB),
        ("drivers/hv/connection.c", "/*", "/* connection */\n/*", TWO + SOB)])
    thread = series_thread(sorted(patches.iterdir()), "ans", cover_subject="vmbus helpers")
    with lore_server() as server:
        server.add(*thread)
        monkeypatch.setenv("HVLAB_LORE_URL", server.base)
        done = env.inv("build", "--kernel", "k", "--series", "lore:ans-0@hvlab.invalid")
    assert done.returncode == 1, done.stderr
    return (env.reports / "latest").resolve()


def read_mails(folder: Path) -> list[email.message.EmailMessage]:
    return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default)  # type: ignore[misc]
            for p in sorted(folder.glob("*.eml"))]


def test_report_mail_answers_the_failing_patch_and_sends_it(
        env: Env, run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    done = env.inv("report.mail", "--run", str(run_dir), "--sender", SENDER)
    assert done.returncode == 0, done.stderr
    # report.mail reads a run's results and leaves reports/latest on them
    assert (env.reports / "latest").resolve() == run_dir
    where = re.search(r"; report (\S+)/junit\.xml", done.stderr)
    assert where, done.stderr
    folder = env.root / where.group(1)
    mails = read_mails(folder / "mail")
    assert len(mails) == 1  # patch 2 passed everything; the build passed
    m = mails[0]
    assert m["Subject"] == f"Re: [PATCH 1/2] {ONE}"
    assert m["In-Reply-To"] == "<ans-1@hvlab.invalid>"
    assert m["To"] == "Test Author <author@example.com>"
    assert "linux-hyperv@vger.kernel.org" in m["Cc"]
    body = m.get_content()
    assert body.startswith("Hi Test Author,\n")
    assert ">> drivers/hv/vmbus_drv.c:4: symbol 'hv_undeclared_helper' was not declared" in body
    assert ">> drivers/hv/vmbus_drv.c:4: no previous prototype for 'hv_undeclared_helper'" in body
    assert "base:     " in body and "head:     " in body and "patch:    <ans-1@hvlab.invalid>" \
        in body
    assert "reproduce:" in body and "C=2 drivers/hv/vmbus_drv.o" in body
    assert "build --kernel k --series lore:ans-0@hvlab.invalid\n" in body  # the run's command
    assert "quoted-printable" not in (folder / "mail" / "01.eml").read_text()

    received: list[tuple[str, bytes]] = []

    class Handler:
        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            received.append((str(envelope.mail_from), envelope.content))  # type: ignore[attr-defined]
            return "250 OK"

    def check_login(server: object, session: object, envelope: object, mechanism: str,
                    auth_data: object) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and auth_data.login == b"hvlab" \
            and auth_data.password == PASSWORD.encode()
        return AuthResult(success=ok, handled=False)  # False: aiosmtpd answers 535

    port = free_port()
    smtpd = Controller(Handler(), hostname="127.0.0.1", port=port, authenticator=check_login,
                       auth_require_tls=False)
    smtpd.start()
    try:
        for k, v in {"HVLAB_SMTP_HOST": "127.0.0.1", "HVLAB_SMTP_PORT": str(port),
                     "HVLAB_SMTP_USER": "hvlab", "HVLAB_SMTP_PASSWORD": "wrong"}.items():
            monkeypatch.setenv(k, v)
        refused = env.inv("report.mail", "--run", str(run_dir), "--sender", SENDER, "--send")
        assert refused.returncode == 2 and "refused the login of hvlab" in refused.stderr
        monkeypatch.setenv("HVLAB_SMTP_PASSWORD", PASSWORD)
        sent = env.inv("report.mail", "--run", str(run_dir), "--sender", SENDER, "--send")
        assert sent.returncode == 0, sent.stderr
    finally:
        smtpd.stop()
    assert len(received) == 1
    got = email.message_from_bytes(received[0][1], policy=email.policy.default)
    assert got["In-Reply-To"] == "<ans-1@hvlab.invalid>" and received[0][0] == \
        "ci@hvlab.invalid"
    for f in env.reports.rglob("*"):
        if f.is_file():
            assert PASSWORD.encode() not in f.read_bytes(), f
    assert PASSWORD not in sent.stdout + sent.stderr
    nobody = env.inv("report.mail", "--run", str(run_dir))
    assert nobody.returncode == 2 and "needs a sender" in nobody.stderr


def test_report_patchwork_posts_one_check_per_patch_and_check(
        env: Env, run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with patchwork_server(TOKEN) as pw:
        one = pw.add_patch("ans-1@hvlab.invalid", f"[1/2] {ONE}")
        two = pw.add_patch("ans-2@hvlab.invalid", f"[2/2] {TWO}")
        args = ("report.patchwork", "--run", str(run_dir), "--url", pw.url,
                "--report-url", "https://ci.example.com/reports")
        monkeypatch.delenv("HVLAB_PATCHWORK_TOKEN", raising=False)
        missing = env.inv(*args)
        assert missing.returncode == 2 and "needs HVLAB_PATCHWORK_TOKEN" in missing.stderr
        monkeypatch.setenv("HVLAB_PATCHWORK_TOKEN", "not-the-token")
        wrong = env.inv(*args)
        assert wrong.returncode == 2 and "the token was refused" in wrong.stderr
        assert "not-the-token" not in wrong.stderr + wrong.stdout
        monkeypatch.setenv("HVLAB_PATCHWORK_TOKEN", TOKEN)
        done = env.inv(*args)
        assert done.returncode == 0, done.stderr
        first = {c["context"]: c for c in pw.checks[one]}
        assert first["hvlab-sparse"]["state"] == "fail"
        assert "hv_undeclared_helper" in first["hvlab-sparse"]["description"]
        assert first["hvlab-w1"]["state"] == "fail"
        assert first["hvlab-apply"]["state"] == "success"
        assert first["hvlab-checkpatch"]["state"] == "success"
        assert first["hvlab-signoff"]["state"] == "success"
        assert "hvlab-build" not in first  # the series' checks go on its last patch
        assert first["hvlab-sparse"]["target_url"] == \
            f"https://ci.example.com/reports/{run_dir.name}/report.html"
        second = {c["context"]: c["state"] for c in pw.checks[two]}
        assert second["hvlab-sparse"] == "success" and second["hvlab-build"] == "success"
        assert "hvlab-kernel-doc" not in second  # skipped on this tree: not posted
        assert all(a == f"Token {TOKEN}" for a in pw.seen_auth[-len(first) - len(second):])
    for f in env.reports.rglob("*"):
        if f.is_file():
            assert TOKEN.encode() not in f.read_bytes(), f
    down = env.inv("report.patchwork", "--run", str(run_dir), "--url", "http://127.0.0.1:1/")
    assert down.returncode == 3 and "cannot reach it" in down.stderr
