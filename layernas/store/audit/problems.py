"""What an audit reports: severities, the actions it suggests, one ``Problem`` per finding and
the ``AuditReport`` whose ``to_dict`` is the ``layernas audit --json`` contract."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

ERROR, WARNING, INFO = "error", "warning", "info"
SEVERITIES = (ERROR, WARNING, INFO)

# Every trial the finished stages ask for, and every final/transfer result, is a target of rule
# all, so the same command redoes a missing one. Snakemake does not redo a missing intermediate
# TABLE when the targets after it are up to date: forcing the cheap aggregate stages rewrites
# the tables, and only missing trials run (the others are found by their key).
RERUN = "rerun your snakemake command with --forcerun aggregate (only missing trials run)"
RERUN_SAME = "rerun the same snakemake command"
FIX = "delete it (layernas audit --fix does) and " + RERUN_SAME
FIX_SAME = "delete it (layernas audit --fix does) and " + RERUN_SAME


@dataclass(frozen=True)
class Problem:
    """One finding: where, what kind, how bad, and what to do about it. ``fixable`` marks the
    ones ``--fix`` may delete: unfinished or corrupted per-key directories, never a table."""

    path: str
    kind: str
    severity: str
    message: str
    action: str
    fixable: bool = False

    def line(self) -> str:
        return f"{self.severity:<7} {self.path}: {self.message} -> {self.action}"


@dataclass
class AuditReport:
    """Problems found, what was read, what --fix removed. ``to_dict`` is the --json contract."""

    results: str
    problems: list[Problem] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, severity: str) -> int:
        return sum(p.severity == severity for p in self.problems)

    @property
    def exit_code(self) -> int:
        """1 when errors were found (also when --fix removed them: a rerun is still needed)."""
        return 1 if self.count(ERROR) else 0

    def sort(self) -> None:
        """Errors first, then warnings, then info; by path within a severity."""
        order = {sev: i for i, sev in enumerate(SEVERITIES)}
        self.problems.sort(key=lambda p: (order[p.severity], p.path, p.kind))

    def to_dict(self) -> dict[str, Any]:
        return {
            "results": self.results,
            "clean": not self.problems,
            "errors": self.count(ERROR),
            "warnings": self.count(WARNING),
            "infos": self.count(INFO),
            "checked": self.checked,
            "problems": [asdict(p) for p in self.problems],
            "removed": self.removed,
            "seconds": round(self.seconds, 3),
        }
