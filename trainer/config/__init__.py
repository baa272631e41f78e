"""The typed config of one training run (see `schema`)."""

from trainer.config.schema import *  # noqa: F401,F403
from trainer.config.schema import (  # noqa: F401 - the private names some callers use
    _check_choice, _invalid, _shown, _type_name)
