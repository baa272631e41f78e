"""`python -m trainer.predict`: the command in `trainer.predict.command`."""

from trainer.predict import command

__doc__ = command.__doc__  # what `--help` prints first

if __name__ == "__main__":
    command.main.run()
