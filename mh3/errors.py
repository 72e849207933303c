"""The one exception type for mistakes a user can make and fix.

`launch.py` turns a `UserError` into one line on stderr and exit code 2, never a traceback.
The message names the file, row or key at fault and says what to do about it.
"""


class UserError(Exception):
    """A bad path, column, label, config key or similar, with the fix in its message."""


def disk_fault(e: OSError) -> str:
    """The one line for a file-system fault met mid-run (a full disk, a read-only or vanished
    file system): what finished is on disk (atomic writes, checkpoints), so a rerun resumes."""
    where = f"{e.filename}: " if e.filename else ""
    return (
        f"{where}{e.strerror or e} (errno {e.errno}); fix the disk or permissions and rerun the "
        "same command: finished work is kept and the run resumes"
    )
