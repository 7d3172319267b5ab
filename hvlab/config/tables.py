"""The loaded configuration: one table per folder of configs/, looked up by name
(an unknown name is a UserError that lists the known ones)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from hvlab.errors import UserError
from hvlab.model import FragmentSpec, HostSpec, KernelSpec, PlanSpec, SeriesSpec, SuiteSpec
from hvlab.report.compare import KnownFailure

T = TypeVar("T")


@dataclass
class Config:
    root: Path
    kernels: dict[str, KernelSpec] = field(default_factory=dict)
    fragments: dict[str, FragmentSpec] = field(default_factory=dict)
    series: dict[str, SeriesSpec] = field(default_factory=dict)
    hosts: dict[str, HostSpec] = field(default_factory=dict)
    suites: dict[str, SuiteSpec] = field(default_factory=dict)
    plans: dict[str, PlanSpec] = field(default_factory=dict)
    known_failures: list[KnownFailure] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    def _get(self, table: dict[str, T], kind: str, name: str) -> T:
        try:
            return table[name]
        except KeyError:
            known = ", ".join(sorted(table)) or "none"
            raise UserError(
                f"unknown {kind} '{name}' (known: {known}; configs: {self.root})"
            ) from None

    def kernel(self, name: str) -> KernelSpec:
        return self._get(self.kernels, "kernel", name)

    def host(self, name: str) -> HostSpec:
        return self._get(self.hosts, "host", name)

    def suite(self, name: str) -> SuiteSpec:
        return self._get(self.suites, "suite", name)

    def plan(self, name: str) -> PlanSpec:
        return self._get(self.plans, "plan", name)

    def fragment(self, name: str) -> FragmentSpec:
        return self._get(self.fragments, "fragment", name)

    def resolve_series(self, name_or_path: str, cwd: Path | None = None) -> SeriesSpec:
        """A series name from configs/patches, or a directory / mbox path anywhere."""
        if name_or_path in self.series:
            return self.series[name_or_path]
        candidate = Path(name_or_path).expanduser()
        if not candidate.is_absolute():
            candidate = (cwd or Path.cwd()) / candidate
        if candidate.exists():
            return SeriesSpec(candidate.name, candidate.resolve())
        known = ", ".join(sorted(self.series)) or "none"
        raise UserError(
            f"--series '{name_or_path}' is neither a series in {self.root / 'patches'} "
            f"(known: {known}) nor an existing directory or patch file"
        )
