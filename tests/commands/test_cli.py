"""`trainer.cli`: every command is written one way, so each answers `--help` with its flags and
ends a bad command line with one `error:` line and status 2; a tool of its own is a few lines."""

import pytest
from absl import flags

from conftest import error_line, run_cli
from trainer import cli

# Each command, and flags its --help must list.
COMMANDS = {
    "trainer.task": ["config", "set", "output_dir", "log_format"],
    "trainer.train_model_local": ["config", "set", "output_dir", "log_format"],
    "trainer.train_model_cloud": ["config", "set", "output_dir", "log_format"],
    "trainer.tune.vertex_trial": ["config", "set", "output_dir"],
    "trainer.convert": ["config", "out", "to", "shard_size", "gzip", "video", "labels", "review",
                        "unreviewed"],
    "trainer.datacheck": ["config", "set", "out", "near"],
    "trainer.predict": ["model", "csv", "batch_size", "allow_unsafe_model", "review", "review_out",
                        "review_by", "smooth"],
    "trainer.smoothing": ["model", "video", "labels", "out"],
    "trainer.compare": ["out"],
    "trainer.submit": ["config", "project", "staging_bucket", "machine_type", "dry_run",
                       "gcloud_yaml", "upload_model", "serving_gpu", "serving_image"],
    "trainer.tune": ["config", "space", "trials", "parallel", "vertex"],
}

# TensorFlow's native start-up lines, written before any Python runs; not the tool's output.
_NATIVE = ("WARNING: All log messages before absl::InitializeLog()", "I0000 ", "W0000 ", "E0000 ")


def _stderr_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line and not line.startswith(_NATIVE)]


@pytest.mark.parametrize("module", COMMANDS)
def test_help_lists_the_flags_and_exits_0(module):
    proc = run_cli("--help", module=module, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "\nflags:\n" in proc.stdout and "\nlogging flags:\n" in proc.stdout
    for name in COMMANDS[module]:
        assert f"--{name}:" in proc.stdout or f"--[no]{name}:" in proc.stdout, (name, proc.stdout)
    assert _stderr_lines(proc.stderr) == []


@pytest.mark.parametrize("module", COMMANDS)
def test_an_unknown_flag_is_one_error_line_and_exit_2(module):
    proc = run_cli("--no_such_flag=1", module=module, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = error_line(proc.stderr)
    assert _stderr_lines(proc.stderr) == [line]  # no usage dump, no traceback
    assert line.startswith("error: unknown flag --no_such_flag, command line, ")
    assert f"python -m {module} --help" in line
    assert proc.stdout == ""


def test_a_command_in_a_package_names_the_package_in_this_process_too(capsys):
    """A command kept in a package's `command` or `__main__` module is started as
    `python -m PACKAGE`, and its error lines say so when run in this process as well."""
    import trainer.tune.__main__ as tune_command
    from trainer.predict import command as predict_command

    for main, package in ((predict_command.main, "trainer.predict"),
                          (tune_command.main, "trainer.tune")):
        assert main(["--no_such_flag=1"]) == 2
        line = error_line(capsys.readouterr().err)
        assert f"`python -m {package} --help`" in line, line


# -- a tool of its own, in this process ------------------------------------------------------------


FLAGS = cli.new_flags()
flags.DEFINE_string("name", None, "Who to greet.", flag_values=FLAGS)
flags.DEFINE_multi_string("set", [], "Repeatable.", flag_values=FLAGS)
flags.DEFINE_integer("times", 1, "How often.", lower_bound=1, flag_values=FLAGS)
SEEN: list = []


def _greet(args: list[str]) -> int:
    from trainer.errors import UserError

    if FLAGS.name == "nobody":
        raise UserError("no one to greet at gs://user:hunter22secret@bucket/x, --name, expected "
                        "a name")
    SEEN.append((FLAGS.name, list(FLAGS.set), FLAGS.times, args))
    return 0


greet = cli.Command(_greet, FLAGS, required=("name",))
greet_files = cli.Command(_greet, FLAGS, takes_args=True)


def test_a_command_runs_in_process_and_flags_do_not_linger(capsys):
    SEEN.clear()
    assert greet(["--name=ada", "--set", "a=1", "--set=b=2", "--times", "3"]) == 0
    assert greet(["--name=bob"]) == 0  # the earlier --set and --times are gone
    assert greet_files(["--name=cy", "one.png", "--times=2", "two.png"]) == 0
    assert SEEN == [("ada", ["a=1", "b=2"], 3, []), ("bob", [], 1, []),
                    ("cy", [], 2, ["one.png", "two.png"])]
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("argv, message", [
    ([], "missing --name, command line, expected the flags that "),
    (["--name=ada", "stray"], "unexpected argument 'stray', command line, expected only flags"),
    (["--name=ada", "--times=0"], "flag --times=0: 0 is not a positive integer, command line"),
    (["--name=ada", "--time=2"], "unknown flag --time (did you mean --times?), command line"),
    (["--name=ada", "--set"], "Missing value for flag --set, command line"),
    (["--name=nobody"], "no one to greet at gs://user:[redacted]@bucket/x, --name, expected"),
])
def test_bad_command_lines_are_one_redacted_error_line_and_status_2(capsys, argv, message):
    assert greet(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: " + message) and len(err.splitlines()) == 1, err
    assert "hunter22secret" not in err


def test_every_command_that_takes_a_config_takes_it_one_way():
    """`--config` and `--set` are defined once (cli.define_config_flags): every command that
    takes a config lists them among its own flags and reads them alike, and no command defines
    them itself."""
    import importlib
    import os
    import re

    from conftest import ROOT

    taking = [m for m, names in COMMANDS.items() if "config" in names]
    tools = 0
    for module in {"trainer.tune.__main__" if m == "trainer.tune" else m for m in taking}:
        command = importlib.import_module(module)
        if not hasattr(command, "FLAGS"):  # a wrapper of trainer.task, with its flags
            continue
        tools += 1
        own = {f.name for f in command.FLAGS.flags_by_module_dict().get(module, [])}
        assert {"config", "set"} <= own, module
        # afresh, as cli.Tool.parse does: a test before this one in the process may have run
        # the command with other flags
        command.FLAGS.unparse_flags()
        command.FLAGS(["prog", "--config", "c.yaml", "--set", "a=1", "--set=b.c=[2, 3]"])
        assert command.FLAGS.config == "c.yaml" and command.FLAGS.set == ["a=1", "b.c=[2, 3]"]
        assert command.FLAGS["set"].help.startswith("Override one config key, e.g. --set ")
        command.FLAGS.unparse_flags()
    defined = []
    for folder, _, files in os.walk(os.path.join(ROOT, "trainer")):
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(folder, name)) as f:
                    text = f.read()
                defined += [name] * len(re.findall(r'DEFINE_\w+\(\s*"(?:config|set)"', text))
    assert tools == 5 and defined == ["cli.py", "cli.py"]
