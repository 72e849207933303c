"""The one exception type for mistakes a user can make and fix.

`launch.py` turns a `UserError` into one line on stderr and exit code 2, never a traceback.
The message names the file, row or key at fault and says what to do about it.
"""


class UserError(Exception):
    """A bad path, column, label, config key or similar, with the fix in its message."""
