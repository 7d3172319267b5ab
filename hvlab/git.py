"""Thin typed wrapper over the git command line (argument lists only)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from hvlab.errors import InfraError
from hvlab.proc import capture, require_tool

# Fixed identity and dates make the commits hvlab creates reproducible: the
# same tarball or the same series on the same base gives the same sha.
IDENTITY = {
    "GIT_AUTHOR_NAME": "hvlab",
    "GIT_AUTHOR_EMAIL": "hvlab@localhost",
    "GIT_COMMITTER_NAME": "hvlab",
    "GIT_COMMITTER_EMAIL": "hvlab@localhost",
}
QUIET = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true", "LC_ALL": "C"}


class GitError(InfraError):
    def __init__(self, argv: Sequence[str], returncode: int, stderr: str) -> None:
        lines = stderr.strip().splitlines()
        # git's own reason (which names the file) rather than its advice after it
        first = next((line for line in lines if line.startswith(("fatal:", "error:"))),
                     lines[-1] if lines else f"exit {returncode}")
        super().__init__(f"git {' '.join(argv[:3])} failed: {first}")
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stderr = stderr


class Git:
    def __init__(self, git_dir: Path | None = None, work_tree: Path | None = None) -> None:
        require_tool("git")
        self.git_dir = git_dir
        self.work_tree = work_tree

    def _argv(self, args: Sequence[str]) -> list[str]:
        argv = ["git"]
        if self.work_tree is not None:
            argv += ["-C", str(self.work_tree)]
        elif self.git_dir is not None:
            argv += ["--git-dir", str(self.git_dir)]
        return argv + list(args)

    def run(self, *args: str, env: Mapping[str, str] | None = None,
            stdin: bytes | None = None, check: bool = True, timeout: float | None = 3600
            ) -> tuple[int, str, str]:
        full_env = dict(QUIET)
        if env:
            full_env.update(env)
        proc = capture(self._argv(args), env=full_env, stdin_data=stdin, timeout=timeout)
        out = proc.stdout.decode("utf-8", "backslashreplace")
        err = proc.stderr.decode("utf-8", "backslashreplace")
        if check and proc.returncode != 0:
            raise GitError(list(args), proc.returncode, err or out)
        return proc.returncode, out, err

    def out(self, *args: str, env: Mapping[str, str] | None = None) -> str:
        return self.run(*args, env=env)[1].strip()

    def ok(self, *args: str) -> bool:
        return self.run(*args, check=False)[0] == 0

    def rev(self, ref: str) -> str | None:
        """The commit sha ``ref`` names, or None."""
        code, out, _ = self.run("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}",
                                check=False)
        return out.strip() if code == 0 and out.strip() else None


def clear_stale_locks(root: Path, patterns: Iterable[str]) -> list[Path]:
    """Remove the git lock files under ``root`` matching ``patterns`` (globs).

    Git takes ``<file>.lock`` before it rewrites a file and renames it into place
    after; a git killed in between (a run killed by a CI timeout or the OOM
    killer) leaves the lock, and every later git that needs that file fails
    with "File exists".  Only a caller that owns what these locks guard (it
    holds hvlab's own lock for them, after the reaper stopped what killed runs
    left running) may call this.  Returns what it removed."""
    removed = []
    for pattern in patterns:
        for lock in sorted(root.glob(pattern)):
            if lock.is_file() and lock.name.endswith(".lock"):
                lock.unlink(missing_ok=True)
                removed.append(lock)
    return removed
