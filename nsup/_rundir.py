"""Runtime directories (notify sockets) that record their owner, and the removal of stale ones.

A supervisor keeps its services' notify sockets in a directory of its own,
``nsup-XXXXXXXX`` under ``$XDG_RUNTIME_DIR``, ``/run`` (root) or the temp
directory.  A clean exit removes it; ``kill -9`` cannot.  So each directory
holds an ``owner`` file with the pid and start time of the nsup that made
it, and the next ``nsup run`` removes the directories whose owner is gone.
The start time tells a recycled pid from the owner: a directory whose pid
now belongs to another process is stale too, and one whose owner lives (a
parallel nsup, a test run beside this one) is never touched.  Directories
without an ``owner`` file (made by older versions) are left alone.
"""

from __future__ import annotations

import contextlib
import os

__all__ = ["OWNER_FILE", "is_alive", "make_runtime_dir", "owner_token", "remove_stale_runtime_dirs"]

OWNER_FILE = "owner"
_PREFIX = "nsup-"


def owner_token(pid: int) -> str | None:
    """Return ``"PID STARTTIME"`` for a live *pid*, or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # Field 22 (starttime), counted after the command name, which may hold spaces.
    fields = stat[stat.rfind(b")") + 2 :].split()
    return f"{pid} {int(fields[19])}"


def is_alive(token: str) -> bool:
    """True while the process that *token* names still runs (same pid, same start time)."""
    pid_text, _, _start = token.partition(" ")
    return pid_text.isdigit() and owner_token(int(pid_text)) == token.strip()


def runtime_base() -> str:
    """Return where runtime directories go: ``$XDG_RUNTIME_DIR``, ``/run`` for root, else the temp dir."""
    if os.environ.get("XDG_RUNTIME_DIR"):
        return os.environ["XDG_RUNTIME_DIR"]
    if os.geteuid() == 0 and os.access("/run", os.W_OK):
        return "/run"
    import tempfile  # noqa: PLC0415 - the last resort; `nsup check` as root never needs it

    return tempfile.gettempdir()


def make_runtime_dir() -> str:
    """Make this supervisor's runtime directory, mode 0711, with its ``owner`` file."""
    import tempfile  # noqa: PLC0415 - as in runtime_base

    path = tempfile.mkdtemp(prefix=_PREFIX, dir=runtime_base())
    os.chmod(path, 0o711)  # noqa: S103 - children of other uids may reach their notify socket, not list it
    token = owner_token(os.getpid())
    with open(os.path.join(path, OWNER_FILE), "w") as f:
        f.write(f"{token}\n")
    return path


# The inode of the initial PID namespace: a kernel constant (PROC_PID_INIT_INO) since 3.8.
_INITIAL_PID_NAMESPACE = 0xEFFFFFFC


def sees_every_pid() -> bool:
    """True in the initial PID namespace, the only one where any supervisor's pid can be looked up.

    Inside a nested PID namespace (a container, ``unshare --pid``) a live
    supervisor outside it has no ``/proc`` entry here, so it would look dead:
    crash cleanup is skipped there rather than risk another supervisor's
    processes and files.  ``NSpid`` cannot tell (``/proc`` mounted for the
    nested namespace lists only its own pids), so the namespace's own inode
    is compared with the initial one's.
    """
    try:
        return os.stat("/proc/self/ns/pid").st_ino == _INITIAL_PID_NAMESPACE
    except OSError:
        return False


def remove_stale_runtime_dirs(base: str | None = None) -> list[str]:
    """Remove runtime directories in *base* whose owner is gone; return their paths."""
    base = base or runtime_base()
    removed: list[str] = []
    if not sees_every_pid():
        return removed
    try:
        entries = list(os.scandir(base))
    except OSError:
        return []
    for entry in entries:
        if not entry.name.startswith(_PREFIX) or not entry.is_dir(follow_symlinks=False):
            continue
        with contextlib.suppress(OSError):
            if entry.stat(follow_symlinks=False).st_uid != os.geteuid():
                continue
            with open(os.path.join(entry.path, OWNER_FILE)) as f:
                token = f.read(64)
            if not is_alive(token):
                import shutil  # noqa: PLC0415 - only when a dead nsup left a directory

                shutil.rmtree(entry.path)
                removed.append(entry.path)
    return removed
