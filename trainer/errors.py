"""The one exception type that means "the user's input is wrong".

Entry points turn it into a single `error: ...` line on stderr and exit status 2, with no traceback;
anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad config, data or path. The message says what, where, and what was expected.

    It is always one line: line breaks that came in with the user's own text (a key, a path, a
    library's reason) are escaped, so the `error:` line stays the last and only one.
    """

    exit_code = 2

    def __init__(self, message: str = ""):
        super().__init__(str(message).replace("\r", "\\r").replace("\n", "\\n"))


class TrainingDiverged(UserError):
    """The loss became NaN or infinite during training."""


class StorageUnavailable(UserError):
    """A bucket stopped answering and the storage library's retries ran out. What was already
    written stays as it was, so the run resumes when re-run once storage answers again."""


class OutOfSpace(UserError):
    """A disk filled up (or a quota or file-size limit was reached) while the run wrote its
    files. Every file is published whole, so what was written before stays intact: the last
    checkpoint resumes the run once there is room."""
