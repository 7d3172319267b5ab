"""Series as maintainers receive them: a lore thread, a git range.

``lore:<message-id>``: hvlab GETs the thread where public-inbox serves it
(``<HVLAB_LORE_URL><message-id>/t.mbox.gz``) and keeps it under
``kernels/cache/series/lore/``; ``b4 am`` then makes the series from it with
no network of its own (``--offline-mode``): the newest revision, the
trailers of the replies, the cover letter.  hvlab fetches rather than b4 so
that an unknown message id (HTTP 404: exit 2) and an unreachable archive
(exit 3) are told apart exactly, and so that ``--offline`` reruns the cached
thread.  (b4 online would also search lore for trailers sent in other
threads; offline it reads the thread only.)

``git:<repo>#<base>..<head>``: ``git format-patch`` of the range, from a local
repository or one fetched into the cache.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import urllib.error
import urllib.request
import zlib
from pathlib import Path

from hvlab.config.tables import Config
from hvlab.errors import InfraError, UserError
from hvlab.git import clear_stale_locks
from hvlab.locks import FileLock
from hvlab.model import SeriesOrigin, SeriesSpec
from hvlab.patch import origin as O
from hvlab.patch.series import cover_in_thread, recipients_in_thread, split_mbox
from hvlab.proc import capture
from hvlab.workspace import Workspace

MAX_THREAD = 64 << 20  # far above any thread's mbox (lore serves gzip)
TIMEOUT = 60


def resolve(ws: Workspace, config: Config, arg: str, offline: bool) -> SeriesSpec:
    """The series named by ``--series``: configs/patches, a path, lore: or git:."""
    parsed = O.parse_arg(arg)
    if parsed is None:
        return config.resolve_series(arg)
    if isinstance(parsed, O.LoreRef):
        return lore_series(ws, parsed, offline)
    return git_series(ws, parsed, offline)


def _key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _gunzip(data: bytes, url: str) -> bytes:
    if data[:2] != b"\x1f\x8b":  # a mirror may serve it plain
        return data
    d = zlib.decompressobj(wbits=47)
    try:
        out = d.decompress(data, MAX_THREAD)
    except zlib.error as exc:
        raise InfraError(f"{url}: not a gzip file the archive should serve ({exc})") from None
    if d.unconsumed_tail:
        raise UserError(f"{url}: the thread is larger than {MAX_THREAD >> 20} MiB")
    return out


def fetch_thread(url: str, arg: str) -> bytes:
    """The thread's mbox; UserError when the archive does not know the message
    id, InfraError when it cannot be reached or answers with an error."""
    req = urllib.request.Request(url, headers={"User-Agent": "hvlab (b4 intake)"})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
            data = resp.read(MAX_THREAD + 1)
    except urllib.error.HTTPError as exc:
        if exc.code in (404, 410):
            raise UserError(f"--series {arg}: the archive does not know this message id "
                            f"({url}: HTTP {exc.code})") from None
        raise InfraError(f"--series {arg}: {url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, FileNotFoundError):
            raise UserError(f"--series {arg}: the archive does not know this message id "
                            f"({url}: no such file)") from None
        raise InfraError(f"--series {arg}: cannot reach the archive: {url}: {reason}") from None
    if len(data) > MAX_THREAD:
        raise UserError(f"--series {arg}: {url} is larger than {MAX_THREAD >> 20} MiB")
    return _gunzip(data, url)


def _b4() -> str:
    beside = Path(sys.executable).parent / "b4"
    found = str(beside) if beside.is_file() else shutil.which("b4")
    if not found:
        raise InfraError("'b4' is not installed (PyPI package b4; run ci/setup.sh)")
    return found


def lore_series(ws: Workspace, ref: O.LoreRef, offline: bool) -> SeriesSpec:
    """The thread's series; one run at a time per message id (its cache folder)."""
    with FileLock(ws.locks / f"series-{_key(ref.msgid)}.lock", f"the thread {ref.arg}",
                  timeout=600, wait=True):
        return _lore_series(ws, ref, offline)


def _lore_series(ws: Workspace, ref: O.LoreRef, offline: bool) -> SeriesSpec:
    url = O.thread_url(O.lore_base(os.environ.get("HVLAB_LORE_URL")), ref.msgid)
    folder = ws.cache / "series" / "lore" / _key(ref.msgid)
    thread = folder / "t.mbox"
    if offline:
        if not thread.is_file():
            raise UserError(f"--series {ref.arg}: not in the cache, and --offline forbids "
                            f"fetching {url}")
    else:
        data = fetch_thread(url, ref.arg)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = thread.with_suffix(".partial")
        tmp.write_bytes(data)
        os.replace(tmp, thread)
        (folder / "message-id").write_text(ref.msgid + "\n")
    out = folder / "am"
    text, ok = _b4_am(ws, thread, out, ref.msgid)
    mboxes = sorted(out.glob("*.mbx"))
    if not ok or not mboxes:
        last = "; ".join(line for line in text.strip().splitlines()[-3:]) or "no output"
        if "No patches found" in text or (ok and not mboxes):
            raise UserError(f"--series {ref.arg}: the thread at {url} holds no patches "
                            f"(b4 am: {last})")
        raise InfraError(f"--series {ref.arg}: b4 am failed on the thread from {url}: "
                         f"{last}; log {folder / 'b4-am.log'}")
    report = O.parse_b4_am(text)
    if report.missing:
        raise UserError(f"--series {ref.arg}: the thread at {url} lacks patch "
                        f"{', '.join(report.missing)} of the series; a series is tested whole")
    mbx = mboxes[0]
    cover_file = mbx.with_suffix(".cover")
    cover = cover_file.read_text(errors="replace") if cover_file.is_file() else ""
    mails, sent_thread = split_mbox(mbx.read_bytes()), thread.read_bytes()
    if not cover and mails:  # b4 takes a cover sent as a reply to v1 for a follow-up
        cover = cover_in_thread(sent_thread, mails[0])
    sent = recipients_in_thread(sent_thread, mails)
    return SeriesSpec(mbx.stem, mbx, SeriesOrigin(ref.arg, url, cover, report.trailers,
                                                  report.notes, sent, cached=offline))


def _b4_am(ws: Workspace, thread: Path, out: Path, msgid: str) -> tuple[str, bool]:
    """``b4 am`` of the thread into ``out``: its output and whether it succeeded.
    Kept while the thread's bytes and b4 are the same (a stamp in ``out``), so a
    dry run or an offline rerun of a cached thread does not run b4 again."""
    b4 = _b4()
    log = out.parent / "b4-am.log"
    stamp = out / ".made-from"
    made_from = f"{hashlib.sha256(thread.read_bytes()).hexdigest()} {b4} " \
                f"{os.stat(b4).st_mtime_ns}\n"
    if stamp.is_file() and stamp.read_text() == made_from and log.is_file():
        return log.read_text(), True
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    env = {"XDG_CACHE_HOME": str(ws.cache / "b4"), "XDG_DATA_HOME": str(ws.cache / "b4")}
    done = capture([b4, "--offline-mode", "--no-stdin", "--no-interactive", "am",
                    "--use-local-mbox", str(thread), "--outdir", str(out), msgid],
                   env=env, timeout=300)
    text = (done.stdout + done.stderr).decode("utf-8", "backslashreplace")
    if done.returncode != 0:
        text += f"\n(b4 exit {done.returncode})"
    log.write_text(text)
    if done.returncode == 0 and any(out.glob("*.mbx")):
        stamp.write_text(made_from)
    return text, done.returncode == 0


def git_series(ws: Workspace, rng: O.GitRange, offline: bool) -> SeriesSpec:
    """The range's patches; one run at a time per range (its cache folder)."""
    with FileLock(ws.locks / f"series-{_key(rng.arg)}.lock", f"the range {rng.arg}",
                  timeout=600, wait=True):
        return _git_series(ws, rng, offline)


def _git_series(ws: Workspace, rng: O.GitRange, offline: bool) -> SeriesSpec:
    local = Path(rng.repo).expanduser()
    folder = ws.cache / "series" / "git" / _key(rng.arg)
    if local.is_dir():
        repo, url = local.resolve(), str(local.resolve())
    else:
        repo, url = folder / "repo.git", rng.repo
        if not repo.is_dir():
            if offline:
                raise UserError(f"--series {rng.arg}: {rng.repo} is not in the cache, and "
                                "--offline forbids fetching it")
            _git(["init", "-q", "--bare", str(repo)], rng, "cannot create the cache")
        for lock in clear_stale_locks(repo, ["*.lock", "refs/**/*.lock"]):  # ours, locked
            print(f"removed {ws.display(lock)}, a git lock a killed run left behind",
                  file=sys.stderr, flush=True)
        if not offline:
            _git(["-C", str(repo), "fetch", "-q", "--no-tags", rng.repo,
                  "+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"], rng,
                 f"cannot fetch {rng.repo}", infra=True)
    for rev in (rng.base, rng.head):
        if capture(["git", "-C", str(repo), "rev-parse", "--verify", "--quiet",
                    f"{rev}^{{commit}}"]).returncode != 0:
            raise UserError(f"--series {rng.arg}: {url} has no commit '{rev}'")
    out = folder / "patches"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    _git(["-C", str(repo), "format-patch", "-q", "--no-signature", "--zero-commit",
          "--no-merges", "-o", str(out), f"{rng.base}..{rng.head}"], rng, "git format-patch")
    if not any(out.iterdir()):
        raise UserError(f"--series {rng.arg}: no commits in {rng.base}..{rng.head}")
    name = f"git-{Path(rng.repo.rstrip('/')).name.removesuffix('.git')}-{rng.head}"
    name = "".join(c if c.isalnum() or c in "._-" else "-" for c in name)
    return SeriesSpec(name, out, SeriesOrigin(rng.arg, url, cached=offline))


def _git(argv: list[str], rng: O.GitRange, what: str, infra: bool = False) -> None:
    done = capture(["git", *argv], timeout=3600)
    if done.returncode != 0:
        err = done.stderr.decode("utf-8", "backslashreplace").strip().splitlines()
        msg = f"--series {rng.arg}: {what}: {err[-1] if err else f'exit {done.returncode}'}"
        raise (InfraError if infra else UserError)(msg)
