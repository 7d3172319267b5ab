"""Where inputs, state and outputs live.

``configs/`` (inputs), ``kernels/`` (state) and ``reports/`` (outputs) sit in
the project root; ``HVLAB_CONFIGS``, ``HVLAB_KERNELS`` and ``HVLAB_REPORTS``
move each one (maintainers keep configs in their own repository; tests
isolate state).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Workspace:
    root: Path
    configs: Path
    kernels: Path
    reports: Path

    @classmethod
    def from_env(cls, root: Path | None = None) -> Workspace:
        base = (root or Path.cwd()).resolve()

        def pick(var: str, default: str) -> Path:
            value = os.environ.get(var)
            return Path(value).expanduser().resolve() if value else base / default

        return cls(
            root=base,
            configs=pick("HVLAB_CONFIGS", "configs"),
            kernels=pick("HVLAB_KERNELS", "kernels"),
            reports=pick("HVLAB_REPORTS", "reports"),
        )

    # state layout under kernels/
    @property
    def store(self) -> Path:
        """The one bare git repository every source's objects go to."""
        return self.kernels / "git" / "store.git"

    @property
    def worktrees(self) -> Path:
        return self.kernels / "worktrees"

    @property
    def builds(self) -> Path:
        return self.kernels / "builds"

    @property
    def cache(self) -> Path:
        return self.kernels / "cache"

    @property
    def locks(self) -> Path:
        return self.kernels / "locks"

    @property
    def processes(self) -> Path:
        """Records of the processes running sessions started (``procs``)."""
        return self.kernels / "run" / "procs"

    def display(self, path: Path) -> str:
        """A path as a user should read it: relative to the cwd when inside it."""
        try:
            return str(path.resolve().relative_to(Path.cwd().resolve()))
        except ValueError:
            return str(path)
