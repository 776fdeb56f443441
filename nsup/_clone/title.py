"""How nsup's own processes show in ``ps``: ``nsup-zygote`` and ``nsup-init: NAME``.

Both run Python code started as ``python3 -I -S -c <a long boot line>``, and
``ps`` would show that whole line, the venv's path included.  The kernel reads
``/proc/PID/cmdline`` from the process's own argv memory, so the title is
written over it, as setproctitle(3) does: the title, NULs, and a non-NUL last
byte, which tells the kernel to stop at the first NUL.  The short name
(``comm``, at most 15 bytes) is set with ``prctl(PR_SET_NAME)``.
"""

from __future__ import annotations

import ctypes

from . import syscalls as _sys

__all__ = ["set_title"]

# arg_start and arg_end: fields 48 and 49 of /proc/self/stat, counted after "pid (comm) ".
_ARG_START = 45


def set_title(title: str, name: str) -> None:
    """Show *title* as the command line and *name* (up to 15 bytes) as the process name."""
    comm = ctypes.create_string_buffer(name.encode()[:15])
    _sys.prctl(_sys.PR_SET_NAME, ctypes.addressof(comm))
    try:
        with open("/proc/self/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return  # no /proc here: the name alone
    fields = stat[stat.rindex(b")") + 2 :].split()
    start, end = int(fields[_ARG_START]), int(fields[_ARG_START + 1])
    size = end - start
    if size < 2:
        return
    text = title.encode()[: size - 2]
    ctypes.memmove(start, text + b"\0" * (size - len(text) - 1) + b" ", size)
