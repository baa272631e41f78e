"""The one way to write a command-line tool: absl flags, `--help`, the `error:` line, exit 2.

A tool defines its flags on its own `new_flags()` (so that several tools can live in one process,
as they do in tests, without two `--config` flags colliding), and wraps the function that does
its work in a `Command`:

    FLAGS = cli.new_flags()
    flags.DEFINE_string("out", ".", "Where the table goes.", flag_values=FLAGS)

    def compare_runs(urls: list[str]) -> int:
        ...

    main = cli.Command(compare_runs, FLAGS, takes_args=True)

    if __name__ == "__main__":
        main.run()

`main(argv)` runs the tool in this process and returns its exit status (what tests call);
`main.run()` is the program. Bad flags or input, raised as `UserError`, end as one line
`error: <what>, <where>, <expected>` on stderr and status 2, with no traceback and no credential.
"""

from __future__ import annotations

import difflib
import sys
from typing import Callable, NoReturn, Optional, Sequence, Union

import absl.logging
from absl import flags

from trainer.errors import UserError
from trainer.runtime import secrets

HELP_FLAGS = ("--help", "-help", "-h", "-?", "--helpshort", "--helpfull")

# The flags this module defines for a command (`define_config_flags`) belong to that command, as
# if it had defined them: listed with its own in `--help`, and found among its own flags.
flags.disclaim_key_flags()


def new_flags() -> flags.FlagValues:
    """A tool's own flag set, which also takes absl's logging flags (`-v`, `--verbosity`, ...)."""
    values = flags.FlagValues()
    for flag in flags.FLAGS.get_flags_for_module(absl.logging):
        values[flag.name] = flag
        values.register_flag_by_module(absl.logging.__name__, flag)
    return values


def define_config_flags(values: flags.FlagValues, config_help: str, set_note: str = "") -> None:
    """`--config FILE` and `--set key=value` (repeatable), defined here once for every command
    that takes a config: `config_help` says what the config is to the command, `set_note` adds
    to `--set`'s help. Both are listed among the calling command's own flags."""
    flags.DEFINE_string("config", None, f"{config_help} A local path, gs:// URL or /gcs/ path.",
                        flag_values=values)
    flags.DEFINE_multi_string("set", [], "Override one config key, e.g. --set train.epochs=3 "
                              f"(the value parsed as YAML).{set_note}",
                              flag_values=values)


def print_error(problem: object) -> None:
    """The one `error: ...` line on stderr, after what stdout holds so far; credentials redacted
    (a message may quote the value or URL that was wrong)."""
    sys.stdout.flush()
    print(f"error: {secrets.redact_text(str(problem))}", file=sys.stderr, flush=True)


class Command:
    """A tool: its flags, and `body`, the function that does its work.

    `body` receives the positional arguments (only when `takes_args`; otherwise any is refused)
    and reads its flags from `flag_values`; it returns the exit status. `required` names flags
    that must be given, or is a function of the parsed flags that names them (a tool whose
    modes need different flags).
    """

    def __init__(self, body: Callable[[list[str]], int], flag_values: flags.FlagValues,
                 takes_args: bool = False,
                 required: Union[Sequence[str], Callable[[flags.FlagValues], Sequence[str]]] = ()):
        self.body = body
        self.flags = flag_values
        self.takes_args = takes_args
        self.required = required if callable(required) else tuple(required)
        # How the tool is started (see `run`): a package's command, in its `command` or
        # `__main__` module, runs as `python -m PACKAGE`.
        module = body.__module__.removesuffix(".__main__").removesuffix(".command")
        self.program = f"python -m {module}"

    def __call__(self, argv: Sequence[str]) -> int:
        """Run the tool in this process on `argv` (without the program name); the exit status."""
        try:
            args = self.parse(argv)
            if not self.flags["verbosity"].present:
                # absl at INFO would print TensorFlow's internals (every checkpoint shard).
                absl.logging.set_verbosity(absl.logging.WARNING)
            return self.body(args)
        except UserError as exc:
            print_error(exc)
            return exc.exit_code

    def parse(self, argv: Sequence[str]) -> list[str]:
        """Set the flags from `argv` afresh (values of an earlier parse do not linger); returns
        the positional arguments. A flag the tool does not have, or a bad value, is a UserError."""
        expected = f"expected the flags that `{self.program} --help` lists"
        self.flags.unparse_flags()
        try:
            args = self.flags([self.program, *argv])[1:]
        except flags.UnrecognizedFlagError as exc:
            near = difflib.get_close_matches(exc.flagname, list(self.flags), n=1)
            hint = f" (did you mean --{near[0]}?)" if near else ""
            raise UserError(f"unknown flag --{exc.flagname}{hint}, command line, "
                            f"{expected}") from None
        except flags.Error as exc:
            raise UserError(f"{exc}, command line, {expected}") from None
        required = self.required(self.flags) if callable(self.required) else self.required
        missing = [f"--{name}" for name in required if self.flags[name].value in (None, [])]
        if missing:
            raise UserError(f"missing {', '.join(missing)}, command line, {expected}")
        if args and not self.takes_args:
            raise UserError(f"unexpected argument {args[0]!r}, command line, expected only flags "
                            f"(see `{self.program} --help`)")
        return args

    def run(self, argv: Optional[Sequence[str]] = None) -> NoReturn:
        """The program: `--help`, the flags, the body, its exit status."""
        argv = sys.argv[1:] if argv is None else list(argv)
        main = sys.modules["__main__"]
        if getattr(main, "__spec__", None) is not None:  # `python -m trainer.X`
            self.program = f"python -m {main.__spec__.name.removesuffix('.__main__')}"
        flags.FLAGS.mark_as_parsed()  # absl's own flags stay at their defaults, without warnings
        secrets.install_excepthook()
        if any(arg in HELP_FLAGS for arg in argv[:argv.index("--") if "--" in argv else None]):
            print(self.help(main.__doc__))
            sys.exit(0)
        try:
            status = self(argv)
        except KeyboardInterrupt:
            print("\ninterrupted", file=sys.stderr)
            status = 130
        sys.exit(status)

    def help(self, doc: Optional[str]) -> str:
        """What the program's docstring says, then its flags (absl's logging flags last)."""
        # The tool's own flags first, whichever module defines them (absl's `get_help` puts first
        # only those of the script it was started as, not those of a package's command module).
        modules = sorted(self.flags.flags_by_module_dict(),
                         key=lambda module: module == absl.logging.__name__)
        text = "\n".join(self.flags.module_help(module) for module in modules)
        for module in modules:
            heading = "logging flags:" if module == absl.logging.__name__ else "flags:"
            text = text.replace(f"\n{module}:\n", f"\n{heading}\n", 1)
        return f"{(doc or self.program).strip()}\n{text}"
