"""The ``layernas`` command. Every subcommand prints human-readable text, or one JSON object
with ``--json`` (its keys are a contract other tooling relies on). Errors in the user's input
end with one ``layernas: error: ...`` line and exit status 2, never a traceback.

One module per command family, each with ``add_parser(subparsers)`` and its ``cmd_*``
functions; JSON and number formatting are in ``layernas.cli.output``.
"""

from __future__ import annotations

import argparse
import os
import sys

# `import layernas.cli.X as X`, not `from layernas.cli import X`: this module then depends on the
# command modules only, not on the package (whose __init__ refers back to this module).
import layernas.cli.audit as audit
import layernas.cli.bench as bench
import layernas.cli.cost as cost
import layernas.cli.export as export
import layernas.cli.latency as latency
import layernas.cli.search as search
import layernas.cli.space as space
import layernas.cli.status as status
import layernas.cli.transfer as transfer
import layernas.cli.trial as trial
from layernas import __version__
from layernas.core.space import SpaceError

# In the order `layernas --help` lists them.
COMMANDS = (space, cost, search, trial, bench, status, transfer, export, latency, audit)

# Errors of the user's input: one line and exit 2. Anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, SpaceError, FileNotFoundError, KeyError)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="layernas", description=__doc__.split("\n")[0])
    p.add_argument("--version", action="version", version=f"layernas {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"layernas: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("layernas: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`layernas status | head -1`): stop quietly, as Unix tools do. Point
        # stdout at /dev/null so the interpreter's last flush does not fail again at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, the status of a tool killed by the broken pipe


if __name__ == "__main__":
    sys.exit(main())
