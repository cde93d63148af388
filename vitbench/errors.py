"""The one exception type users see.

Every mistake a user can make (bad config, unknown backbone, missing data, ...)
raises :class:`VitbenchError` with a one-line message that names the problem and
the fix. The CLI prints it as ``vitbench: error: <message>`` and exits with
status 2, without a traceback.
"""


class VitbenchError(Exception):
    """A user-facing error: one line, names the problem and the fix."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
