"""What the command-line tools share: absl's verbosity, the one-line error convention, and
credentials kept out of what they print.

Each tool's `main` is a function of its positional arguments that returns an exit status; bad
input raised as `UserError` becomes `error: <what>, <where>, <expected>` on stderr and status 2,
with no traceback.
"""

from __future__ import annotations

import sys
from typing import Callable, Sequence

from absl import app, flags
from absl import logging as absl_logging

from trainer.runtime import secrets
from trainer.errors import UserError


def quiet_absl() -> None:
    """absl's INFO would print TensorFlow's internals (every checkpoint shard); `-v 0` keeps it."""
    if not flags.FLAGS["verbosity"].present:
        absl_logging.set_verbosity(absl_logging.WARNING)


def print_error(problem: object) -> None:
    """The one `error: ...` line on stderr, after what stdout holds so far; credentials redacted
    (a message may quote the value or URL that was wrong)."""
    sys.stdout.flush()
    print(f"error: {secrets.redact_text(str(problem))}", file=sys.stderr, flush=True)


def run(main: Callable[[Sequence[str]], int]) -> None:
    """`app.run` for a tool: parse flags, call `main(positional args)`, exit with its status."""

    def wrapped(argv: Sequence[str]) -> None:
        quiet_absl()
        secrets.install_excepthook()
        try:
            status = main(list(argv[1:]))
        except UserError as exc:
            print_error(exc)
            status = exc.exit_code
        except KeyboardInterrupt:
            print("\ninterrupted", file=sys.stderr)
            status = 130
        sys.exit(status)

    app.run(wrapped)
