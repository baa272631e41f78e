"""What the command-line tools share: absl's verbosity, and the one-line error convention.

Each tool's `main` is a function of its positional arguments that returns an exit status; bad
input raised as `UserError` becomes `error: <what>, <where>, <expected>` on stderr and status 2,
with no traceback.
"""

from __future__ import annotations

import sys
from typing import Callable, Sequence

from absl import app, flags
from absl import logging as absl_logging

from trainer.errors import UserError


def quiet_absl() -> None:
    """absl's INFO would print TensorFlow's internals (every checkpoint shard); `-v 0` keeps it."""
    if not flags.FLAGS["verbosity"].present:
        absl_logging.set_verbosity(absl_logging.WARNING)


def run(main: Callable[[Sequence[str]], int]) -> None:
    """`app.run` for a tool: parse flags, call `main(positional args)`, exit with its status."""

    def wrapped(argv: Sequence[str]) -> None:
        quiet_absl()
        try:
            status = main(list(argv[1:]))
        except UserError as exc:
            sys.stdout.flush()
            print(f"error: {exc}", file=sys.stderr)
            status = exc.exit_code
        except KeyboardInterrupt:
            print("\ninterrupted", file=sys.stderr)
            status = 130
        sys.exit(status)

    app.run(wrapped)
