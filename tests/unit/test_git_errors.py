"""What a failed git command says: git's reason, which names the file, not the
advice git prints after it (a stale lock ends with "remove the file manually")."""

from __future__ import annotations

import pytest

from hvlab.git import GitError

pytestmark = pytest.mark.unit

# git 2.39 (Debian 12), `git reset --hard` on a worktree whose index.lock a killed git left
STALE_LOCK = """fatal: Unable to create '/k/git/store.git/worktrees/k/index.lock': File exists.

Another git process seems to be running in this repository, e.g.
an editor opened by 'git commit'. Please make sure all processes
are terminated then try again. If it still fails, a git process
may have crashed in this repository earlier:
remove the file manually to continue.
"""


def test_the_reason_git_gives_is_the_message() -> None:
    err = GitError(["reset", "--quiet", "--hard"], 128, STALE_LOCK)
    assert str(err) == ("git reset --quiet --hard failed: fatal: Unable to create "
                        "'/k/git/store.git/worktrees/k/index.lock': File exists.")


def test_without_a_fatal_line_the_last_line_and_without_output_the_exit_code() -> None:
    assert str(GitError(["am"], 1, "Applying: x\nPatch failed at 0001 x\n")) == \
        "git am failed: Patch failed at 0001 x"
    assert str(GitError(["fetch"], 128, "")) == "git fetch failed: exit 128"
