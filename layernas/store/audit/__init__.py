"""`layernas audit`, `layernas clean-weights`, `layernas retry-failed` and disk use: checks of a
results directory against the promises the workflow makes about it (docs/design.md,
"Reliability promises"; the checks are listed in docs/audit.md).

Pure logic, no argparse, so the checks are tested directly and `layernas status` can reuse
``disk_usage``. Everything is read once (one pass over trial directories, one read of each
Parquet table) and checked in memory, so a 1,000-trial search is audited in about a second.

Severity decides the exit status: errors (something a rerun would trip over, or a table that
disagrees with the trials) give 1; warnings (orphan trial directories, settings that changed)
and info (failed trials, stages not run yet) are printed but give 0, because a failed trial
is a recorded result (it is never retried) and an orphan is a reusable trial of another search.

    problems.py      severities, suggested actions, Problem, AuditReport (the --json contract)
    scan.py          reading a results directory once: run info, tables, per-key records
    checks.py        the checks, and ``audit`` which runs them
    maintenance.py   fix (--fix), clean_weights, disk_usage, retry_failed
"""

from layernas.store.audit.checks import audit
from layernas.store.audit.maintenance import clean_weights, disk_usage, fix, retry_failed, selectable_keys
from layernas.store.audit.problems import ERROR, INFO, SEVERITIES, WARNING, AuditReport, Problem

__all__ = [
    "ERROR", "INFO", "SEVERITIES", "WARNING", "AuditReport", "Problem",
    "audit", "clean_weights", "disk_usage", "fix", "retry_failed", "selectable_keys",
]
