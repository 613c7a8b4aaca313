"""The first lines a pool worker runs: ``python .../sepbench/backends/worker.py PARENT FD``.

Run as a script, not imported through the package, so that the worker asks Linux for SIGTERM
on its parent's death (``PR_SET_PDEATHSIG``) before importing anything slow: importing torch
takes seconds, and a sweep killed in those seconds must not leave its workers behind. Then it
serves the parent over the pipe ``FD`` (:func:`sepbench.backends.pool.serve`).
"""

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def main(parent: int, fd: int) -> None:
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the request took effect
        return
    from sepbench.backends.pool import serve

    serve(fd, parent)


if __name__ == "__main__":
    del sys.path[0]  # this script's folder: its modules are sepbench.backends.*, not top-level
    main(int(sys.argv[1]), int(sys.argv[2]))
