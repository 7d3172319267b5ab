"""What a run knows of each series it applied, for the reports that answer the
series where it came from (report.mail, report.patchwork).

The patch stage writes ``series/<cell>.json`` in the run folder: where the
series came from, its cover letter's subject, base and head commits, and per
patch its subject, author, Message-Id, To/Cc and commit.  Pure but for
``write``/``read``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from hvlab.errors import UserError

FORMAT = 1


@dataclass(frozen=True)
class PatchRecord:
    index: int
    subject: str  # as the patch stage's cases name it
    mail_subject: str  # as sent ("[PATCH v2 1/3] ..."); "" for a plain diff
    author: str  # "Name <email>"; "" for a plain diff
    msgid: str  # without angle brackets; "" when the patch had none
    recipients: tuple[str, ...]  # To and Cc it was sent to
    commit: str  # "" when it did not apply


@dataclass(frozen=True)
class SeriesRecord:
    cell: str  # the cell label (kernel+series), the stages' label
    kernel: str
    series: str
    arg: str  # as given on the command line or in the plan
    url: str  # the thread or repository ("" for a directory or file)
    cover_subject: str
    cover_msgid: str  # "" without a cover letter
    base: str
    commit: str
    patches: tuple[PatchRecord, ...]
    cover: str = ""  # what the cover letter says (its body, without the shortlog)

    @property
    def by_mail(self) -> bool:
        return self.arg.startswith("lore:")


def write(folder: Path, record: SeriesRecord) -> Path:
    path = folder / "series" / f"{record.cell.replace('/', '_')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"format": FORMAT, **asdict(record)}, indent=1))
    return path


def read(run: Path) -> list[SeriesRecord]:
    """The series records of a run folder; UserError naming the file when one is bad."""
    out = []
    for path in sorted((run / "series").glob("*.json")):
        try:
            data = json.loads(path.read_text())
            patches = tuple(PatchRecord(**{**p, "recipients": tuple(p["recipients"])})
                            for p in data.pop("patches"))
            data.pop("format", None)
            out.append(SeriesRecord(**data, patches=patches))
        except (ValueError, TypeError, KeyError) as exc:
            raise UserError(f"{path}: not a series record hvlab wrote ({exc})") from None
    return out
