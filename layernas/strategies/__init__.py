"""Search strategies sharing one ask/tell interface (see base.Strategy)."""
