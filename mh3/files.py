"""Writing files so that a crash never leaves half a file behind.

Everything mh3 writes that another stage or a rerun reads (results, manifests, exports, wavs)
goes to a temporary name in the same folder first and is renamed into place, which is atomic
on POSIX file systems.

In a multi-host run every process computes the same results, but only process 0 writes them:
the workdir is shared, and two writers would race. `atomic_write` does nothing on the other
processes; a process that then reads what process 0 wrote waits at a barrier first
(mh3.train.parallel.sync).
"""

import json
import os
import tempfile
from collections.abc import Callable
from typing import Any


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """Calls `write(tmp_path)` and renames the result to `path` only if it succeeded.

    Args:
      path: final file name.
      write: writes the complete file at the path it is given.
    """
    import jax

    if jax.process_index() != 0:
        return
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    # Keep the suffix: some writers (soundfile, matplotlib) pick the format from it.
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.splitext(path)[1])
    os.close(fd)
    try:
        write(tmp)
        # mkstemp creates 0600 files; give the result the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path: str, obj: Any) -> None:
    """Writes `obj` as indented JSON, atomically."""

    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=False)
            f.write("\n")

    atomic_write(path, write)


def read_json(path: str) -> Any:
    with open(path) as f:
        return json.load(f)
