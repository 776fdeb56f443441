"""How nsup's own processes show in ``ps``: ``nsup-zygote`` and ``nsup-init: NAME``.

Both run Python code started as ``python3 -I -S -c <a long boot line>``, and
``ps`` would show that whole line, the venv's path included.  The kernel reads
``/proc/PID/cmdline`` from the process's own argv memory, so the title is
written over it, as setproctitle(3) does: the title, NULs, and a non-NUL last
byte, which tells the kernel to stop at the first NUL.  The short name
(``comm``, at most 15 bytes) is set with ``prctl(PR_SET_NAME)``.

Where the argv memory lies is read from ``/proc/self/stat`` once, by the
zygote's own title: every process it clones has its argv at the same place,
so an init only writes its title.  Reading and parsing the file again in each
init would copy some 200 kB of the zygote's pages into it (ctypes array types,
file objects, the split fields), for good.
"""

from __future__ import annotations

import ctypes

from . import syscalls as _sys

__all__ = ["set_title"]

# arg_start and arg_end: fields 48 and 49 of /proc/self/stat, counted after "pid (comm) ".
_ARG_START = 45
_COMM_SIZE = 16  # TASK_COMM_LEN, the NUL included

_comm = ctypes.create_string_buffer(_COMM_SIZE)
_comm_address = ctypes.addressof(_comm)
_argv_area: tuple[int, int] | None = None  # (start, size) of our argv memory, once read


def _read_argv_area() -> tuple[int, int]:
    try:
        with open("/proc/self/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return 0, 0  # no /proc here: the name alone
    fields = stat[stat.rindex(b")") + 2 :].split()
    start, end = int(fields[_ARG_START]), int(fields[_ARG_START + 1])
    return start, end - start


def set_title(title: str, name: str) -> None:
    """Show *title* as the command line and *name* (up to 15 bytes) as the process name."""
    global _argv_area  # noqa: PLW0603 - read once per address space, as the docstring says
    comm = name.encode()[: _COMM_SIZE - 1]
    ctypes.memmove(_comm_address, comm + b"\0" * (_COMM_SIZE - len(comm)), _COMM_SIZE)
    _sys.prctl(_sys.PR_SET_NAME, _comm_address)
    if _argv_area is None:
        _argv_area = _read_argv_area()
    start, size = _argv_area
    if size < 2:
        return
    text = title.encode()[: size - 2]
    ctypes.memmove(start, text + b"\0" * (size - len(text) - 1) + b" ", size)
