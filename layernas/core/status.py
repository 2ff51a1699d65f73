"""Status and action names of the on-disk contract, defined once.

They are plain strings (``Status.OK == "ok"``) because they are written into Parquet columns
and JSON records and compared with what is read back; the classes only give them one home.
"""

from __future__ import annotations


class Status:
    """``status`` of a history row and of a record's metrics.json."""

    OK = "ok"            # evaluated, accuracy usable
    FAILED = "failed"    # evaluated, the model could not give an accuracy (recorded, not retried)
    CACHED = "cached"    # an arch evaluated earlier in the search: its accuracy is reused
    DROPPED = "dropped"  # never evaluated: no completion can reach the target
    EVALUATED = (OK, FAILED)
    USABLE = (OK, CACHED)


class Action:
    """``action`` the planner gives each child of a stage (children.parquet)."""

    EVALUATE = "evaluate"
    CACHED = Status.CACHED
    DROPPED = Status.DROPPED
    BUDGET = "budget"    # would be evaluated, but the trial budget is spent


def status_counts(history) -> dict[str, int]:
    """Counts the summaries report (trials = evaluations, ok or failed)."""
    counts = history["status"].value_counts().to_dict() if len(history) else {}
    ok, failed = int(counts.get(Status.OK, 0)), int(counts.get(Status.FAILED, 0))
    return {"trials": ok + failed, "failed": failed, "cached": int(counts.get(Status.CACHED, 0)),
            "dropped": int(counts.get(Status.DROPPED, 0))}


def search_summary(space, cfg, history, best, stopped_by_budget: bool, budget: int | None, **extra) -> dict:
    """The summary of a finished search, the same keys from the workflow and from
    ``layernas search`` (``extra`` adds what only one of them knows)."""
    return {
        "space": space.name,
        "space_id": space.space_id,
        "target": [cfg.target_min, cfg.target_max],
        "metric": cfg.metric,
        "buckets": cfg.buckets,
        "replicas": cfg.replicas,
        "per_sweep": cfg.per_sweep,
        "best": best,
        **status_counts(history),
        "sweeps": int(history["sweep"].nunique()) if len(history) else 0,
        "stopped_by_budget": bool(stopped_by_budget),
        "budget": budget,
        **extra,
    }
