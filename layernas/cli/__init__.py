"""The ``layernas`` command line: ``main`` (layernas.cli.main) builds the parser from one
module per command (space, cost, search, trial, bench, status, transfer, export, latency, audit); all of them
print through layernas.cli.output."""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """``layernas.cli.main.main``. Imported when called, not here: `python -m layernas.cli.main`
    imports this package first, and a package that had already imported its ``main`` module
    makes runpy warn on stderr, which would break the one-error-line promise."""
    from layernas.cli.main import main as _main

    return _main(argv)


__all__ = ["main"]
