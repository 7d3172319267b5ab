"""A stand-in for lore.kernel.org: a small HTTP server in public-inbox's layout.

It is not lore.  It serves the one part of public-inbox's HTTP interface
hvlab uses: ``GET <base><message-id>/t.mbox.gz``, the whole thread that
message belongs to as a gzip'd mbox (public-inbox's documented thread
download, what b4 fetches), and 404 for a message id it does not hold.
Message ids in the path are percent-escaped as lore does (``/`` as
``%2F``).  Nothing else (searches, Atom feeds) is implemented.

Threads are built the way ``git send-email`` sends a series: a cover letter
``[PATCH vN 0/M]`` and the patches as replies to it (``In-Reply-To`` and
``References``), reviewers' replies below them.
"""

from __future__ import annotations

import gzip
import re
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from tests.http_stub import serving

LIST = "linux-hyperv@vger.kernel.org"


@dataclass
class Mail:
    msgid: str
    sender: str
    subject: str
    body: str
    date: str
    in_reply_to: str = ""
    references: tuple[str, ...] = ()
    to: str = LIST
    cc: str = "K. Y. Srinivasan <kys@microsoft.com>, Wei Liu <wei.liu@kernel.org>"

    def text(self) -> str:
        head = ["From mboxrd@z Thu Jan  1 00:00:00 1970", f"From: {self.sender}",
                f"Date: {self.date}", f"Subject: {self.subject}",
                f"Message-Id: <{self.msgid}>", f"To: {self.to}", f"Cc: {self.cc}"]
        if self.in_reply_to:
            head += [f"In-Reply-To: <{self.in_reply_to}>",
                     "References: " + " ".join(f"<{r}>" for r in self.references)]
        body = re.sub(r"^(>*From )", r">\1", self.body.rstrip("\n"), flags=re.M)  # mboxrd
        return "\n".join(head) + "\n\n" + body + "\n\n"


def _split(patch: str) -> tuple[str, str, str]:
    """(From:, Subject: without its [PATCH n/m], the body after the headers)."""
    head, _, body = patch.partition("\n\n")
    fields: dict[str, str] = {}
    last = ""
    for line in head.splitlines()[1:]:
        if line[:1] in (" ", "\t") and last:
            fields[last] += " " + line.strip()
        else:
            last, _, value = line.partition(": ")
            fields[last] = value
    subject = fields["Subject"].split("] ", 1)[-1]
    return fields["From"], subject, body


def series_thread(patches: Sequence[Path], tag: str, version: int = 1,
                  base_commit: str = "", cover_subject: str = "the series",
                  in_reply_to: str = "", day: int = 21) -> list[Mail]:
    """``git format-patch`` files sent as one thread: cover ``<tag>-0@...``,
    patch N ``<tag>-N@...``."""
    n = len(patches)
    v = f" v{version}" if version > 1 else ""
    cover_id = f"{tag}-0@hvlab.invalid"
    date = f"Sat, {day} Nov 2026 10:36:41 +0000"
    # the author sends the cover letter too (b4 ties a cover to its series by sender)
    sender = _split(patches[0].read_text())[0] if patches else \
        "hvlab maintainers <maintainers@hvlab.invalid>"
    body = f"This series changes {cover_subject}.\n"
    if base_commit:
        body += f"\nbase-commit: {base_commit}\n"
    refs = (in_reply_to,) if in_reply_to else ()
    mails = [Mail(cover_id, sender, f"[PATCH{v} 0/{n}] {cover_subject}", body + "-- \n2.39.5\n",
                  date, in_reply_to, refs)]
    for i, path in enumerate(patches, start=1):
        author, subject, body = _split(path.read_text())
        mails.append(Mail(f"{tag}-{i}@hvlab.invalid", author, f"[PATCH{v} {i}/{n}] {subject}",
                          body, date, cover_id, (*refs, cover_id)))
    return mails


def reply(to: Mail, sender: str, text: str, msgid: str, day: int = 22) -> Mail:
    """A reviewer's answer: the quoted subject, the trailer lines in ``text``."""
    refs = (*to.references, to.msgid)
    return Mail(msgid, sender, "Re: " + to.subject, f"On a day, someone wrote:\n> ...\n\n{text}\n",
                f"Sun, {day} Nov 2026 09:00:00 +0000", to.msgid, refs)


@dataclass
class LoreServer:
    base: str
    threads: list[list[Mail]] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def add(self, *mails: Mail) -> None:
        """Messages of one thread (a later add may continue a thread)."""
        self.threads.append(list(mails))

    def thread_of(self, msgid: str) -> list[Mail] | None:
        """All the mails connected to ``msgid`` by replies, as public-inbox threads them."""
        ids = {msgid}
        everything = [m for t in self.threads for m in t]
        changed = True
        while changed:
            changed = False
            for m in everything:
                linked = {m.msgid, m.in_reply_to, *m.references} - {""}
                if linked & ids and not linked <= ids:
                    ids |= linked
                    changed = True
        found = [m for m in everything if m.msgid in ids]
        return found or None


@contextmanager
def lore_server() -> Iterator[LoreServer]:
    """The stand-in on 127.0.0.1, its archive at ``<base>`` = http://HOST:PORT/all/."""
    holder: list[LoreServer] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            server = holder[0]
            server.requests.append(self.path)
            path = urllib.parse.urlsplit(self.path).path
            if not path.startswith("/all/") or not path.endswith("/t.mbox.gz"):
                return self.send_error(404)
            msgid = urllib.parse.unquote(path[len("/all/"):-len("/t.mbox.gz")])
            thread = server.thread_of(msgid)
            if thread is None:
                return self.send_error(404, "Not Found")
            data = gzip.compress("".join(m.text() for m in thread).encode())
            self.send_response(200)
            self.send_header("Content-Type", "application/gzip")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass

    with serving(Handler) as port:
        holder.append(LoreServer(f"http://127.0.0.1:{port}/all/"))
        yield holder[0]
