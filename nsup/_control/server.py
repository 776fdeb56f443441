"""The control socket of ``nsup run``: status and commands over line-delimited JSON.

Why it looks the way it does:

- **A Unix stream socket, mode 0600, plus SO_PEERCRED.**  The file mode is
  the first gate: the kernel refuses ``connect`` to anyone without write
  permission on the socket file.  Each accepted peer is then checked again by
  its uid (``SO_PEERCRED``), so a socket whose mode was loosened by hand, or
  an fd handed to another process, still lets only the owner and root in.
  The refusal is a JSON error reply, then the connection closes.
- **Binding never steals.**  An existing path is probed with ``connect``:
  ``ECONNREFUSED`` means its nsup is gone (the socket is stale and is
  replaced); a connection means another nsup is alive there and this one
  refuses to start.  ``bind`` itself fails if a racing nsup got there first.
  The socket is bound under ``umask(0o177)``, so it never exists with a wider
  mode, and on exit it is removed only if it is still ours (same inode).
- **Bounded clients.**  At most :data:`MAX_CLIENTS` connections are served
  at once (one more gets a ``busy`` error, written without waiting, and is
  closed); a connection with no request for :data:`IDLE_TIMEOUT` seconds is
  closed; a reply that a client does not read within :data:`SEND_TIMEOUT`
  seconds ends that connection, and so does an event not read within
  :data:`EVENTS_SEND_TIMEOUT` (long, so that a paused ``nsup events | less``
  can resume and read why it was dropped).
- **One task per client, bounded lines.**  A request line over
  :data:`MAX_LINE` bytes gets a ``too_long`` error and the rest of that line is
  read and thrown away, so memory per client stays bounded and the client can
  go on.  Bad JSON, a wrong version or an unknown command get an error reply;
  any other exception in a handler is reported to that client and logged, but
  never reaches the supervisor's nursery.  A client that disconnects simply
  ends its task; a command it asked for still completes.
- **Events are pushed, never awaited by the supervisor.**  ``events``
  subscribes to the supervisor's event bus (whose publish never blocks); a
  subscriber that falls :data:`EVENT_BACKLOG` events behind is told so and
  dropped (its queue is freed at once), so a stalled ``nsup events`` cannot
  grow nsup's memory for ever.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
import stat
import struct
import time
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

import attrs
import trio

from .._engine.events import BACKLOG
from .._errors import NsupError, PolicyError
from .client import PROTOCOL_VERSION

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from .._engine.runner import ServiceStatus
    from .._engine.supervisor import Supervisor

__all__ = [
    "EVENTS_SEND_TIMEOUT",
    "EVENT_BACKLOG",
    "IDLE_TIMEOUT",
    "MAX_CLIENTS",
    "MAX_LINE",
    "SEND_TIMEOUT",
    "BoundSocket",
    "ControlServer",
    "ControlSocketError",
    "bind_control_socket",
    "refuse_without_waiting",
    "status_to_dict",
]

MAX_LINE = 64 * 1024  # bytes in one request line
MAX_CLIENTS = 128  # connections served at once; more get a 'busy' error and are closed
IDLE_TIMEOUT = (
    60.0  # seconds a connection may wait before its next request (not once it follows events)
)
SEND_TIMEOUT = 10.0  # seconds one reply may take to reach a client that does not read
EVENTS_SEND_TIMEOUT = (
    300.0  # the same for an event: a paused `nsup events` may resume and see 'lagged'
)
EVENT_BACKLOG = BACKLOG  # events a subscriber may fall behind before it is dropped
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class ControlSocketError(NsupError, OSError):
    """The control socket cannot be created: in use by a live nsup, or not a socket."""


@attrs.define
class BoundSocket:
    """A listening control socket and the inode it was bound as (to remove only our own)."""

    sock: socket.socket
    path: str
    inode: int

    def close(self) -> None:
        """Close the socket and remove its file, unless another nsup has replaced it since."""
        self.sock.close()
        try:
            if os.lstat(self.path).st_ino == self.inode:
                os.unlink(self.path)
        except OSError:
            pass


def _prepare_directory(directory: str) -> None:
    """Create *directory* (0700) if missing; refuse a shared one that others could write."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    st = os.stat(directory)
    if st.st_mode & 0o002 and not st.st_mode & stat.S_ISVTX:
        raise ControlSocketError(
            errno.EPERM,
            f"refusing to put the control socket in {directory}: anyone may write there; "
            "choose another [supervisor] control path",
        )
    if directory.startswith("/tmp/nsup-") and st.st_uid != os.geteuid():  # noqa: S108 - checked, not used
        raise ControlSocketError(
            errno.EPERM,
            f"refusing to use {directory}: it belongs to uid {st.st_uid}, not to us "
            f"(uid {os.geteuid()}); remove it or set [supervisor] control",
        )


def _evict_stale(path: str) -> None:
    """Remove *path* if it is a socket nobody listens on; refuse if someone does."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ControlSocketError(
            errno.EEXIST,
            f"{path} exists and is not a socket; remove it or choose another [supervisor] control path",
        )
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    probe.settimeout(2.0)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)  # stale: its nsup is gone
        return
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ControlSocketError(
            errno.EADDRINUSE,
            f"control socket {path} is in use and answers oddly ({exc.strerror or exc}); "
            "not taking it over",
        ) from None
    finally:
        probe.close()
    raise ControlSocketError(
        errno.EADDRINUSE,
        f"another nsup is already running with control socket {path}; "
        "stop it first, or give this policy another [supervisor] control path",
    )


def bind_control_socket(path: str) -> BoundSocket:
    """Create the listening control socket at *path*, mode 0600, owned by us.

    Raises:
        ControlSocketError: a live nsup listens there, or the path is not a socket.
        OSError: the directory or the socket cannot be made (the message says which path).

    """
    directory = os.path.dirname(os.path.abspath(path))
    try:
        _prepare_directory(directory)
    except ControlSocketError:
        raise
    except OSError as exc:
        raise OSError(
            exc.errno, f"cannot create control socket {path}: {directory}: {exc.strerror}"
        ) from None
    _evict_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ControlSocketError(
                errno.EADDRINUSE,
                f"another nsup took control socket {path} just now; not taking it over",
            ) from None
        raise OSError(exc.errno, f"cannot create control socket {path}: {exc.strerror}") from None
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(socket.SOMAXCONN)
    return BoundSocket(sock, path, os.lstat(path).st_ino)


def _nsup_version() -> str:
    try:
        return version("nsup")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "unknown"


def status_to_dict(status: ServiceStatus) -> dict[str, Any]:
    """Return one service's status as the protocol sends it."""
    last = status.last_exit
    return {
        "name": status.name,
        "state": status.state,
        "pid": status.pid,
        "init_pid": status.init_pid,
        "started_at": status.started_at,
        "uptime": status.uptime,
        "restarts": status.restarts,
        "ready": status.ready,
        "error": status.error,
        "last_exit": None
        if last is None
        else {
            "code": last.code,
            "signal": last.signal,
            "exit_code": last.exit_code,
            "core_dumped": last.core_dumped,
            "oom_killed": last.oom_killed,
            "text": str(last),
        },
        "last_reason": status.last_reason,
        "status_text": status.status_text,
        "blocked": status.blocked,
        "completed": status.completed,
        "resources": {
            "cpu_seconds": status.cpu_seconds,
            "memory_bytes": status.memory_bytes,
            "memory_peak_bytes": status.memory_peak_bytes,
            "tasks": status.tasks,
            "oom_kills": status.oom_kills,
        },
    }


def _parse_signal(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return int(signal.Signals(value))
        except ValueError:
            pass
    elif isinstance(value, str):
        name = value.upper()
        if name.isdigit():
            return _parse_signal(int(name))
        name = name if name.startswith("SIG") else f"SIG{name}"
        if name in signal.Signals.__members__:
            return int(signal.Signals[name])
    raise _RequestError("bad_request", f"'signal' must be a signal name or number (got {value!r})")


class _RequestError(Exception):
    """An error reply: a machine-readable *code* and a message for people."""

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra


class _TooLong:
    """The line was longer than :data:`MAX_LINE`."""


_TOO_LONG = _TooLong()


class _LineReader:
    """Split a stream into lines of at most *limit* bytes, skipping the rest of longer ones."""

    def __init__(self, stream: trio.SocketStream, limit: int) -> None:
        self._stream = stream
        self._limit = limit
        self._buf = bytearray()
        self._discarding = False

    async def next_line(self) -> bytes | _TooLong | None:
        """Return the next line without its newline; ``_TOO_LONG``; or None at end of stream."""
        while True:
            end = self._buf.find(b"\n")
            if end >= 0:
                line = bytes(self._buf[:end])
                del self._buf[: end + 1]
                if self._discarding:
                    self._discarding = False
                    continue
                return _TOO_LONG if len(line) > self._limit else line
            if self._discarding:
                self._buf.clear()
            elif len(self._buf) > self._limit:
                self._buf.clear()
                self._discarding = True
                return _TOO_LONG
            data = await self._stream.receive_some(65536)
            if not data:
                return None  # end of stream; a partial last line is dropped
            self._buf += data


def refuse_without_waiting(stream: trio.SocketStream, message: bytes) -> None:
    """Write *message* to a connection nsup will not serve, if it fits at once, and close it."""
    with contextlib.suppress(OSError):
        os.write(stream.socket.fileno(), message)  # a non-blocking socket: never waits
    stream.socket.close()


@contextlib.asynccontextmanager
async def contained_client(
    stream: trio.SocketStream, log: Callable[[str], object], what: str
) -> AsyncIterator[None]:
    """Serve one client inside: its failures stay with it, and its stream is closed at the end.

    A client that goes away or stops reading (a send timeout) ends quietly;
    any other exception is logged as *what* and goes no further, so one
    client can never reach the supervisor.
    """
    try:
        yield
    except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
        pass  # the client went away, or stopped reading
    except Exception as exc:  # noqa: BLE001 - one client's failure must not reach the supervisor
        log(f"{what}: {exc!r}")
    finally:
        with trio.CancelScope(shield=True):
            await stream.aclose()


def _peer_uid(sock: trio.socket.SocketType) -> int:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    return int(_UCRED.unpack(raw)[1])


class ControlServer:
    """Serves the control protocol for one :class:`Supervisor`.

    Args:
        sup: the running supervisor.
        reload: the coroutine function that re-reads the policy (the same one
            SIGHUP runs); returns ``{"changed": [...], "removed": [...],
            "added": [...]}`` or raises :class:`nsup.PolicyError` / OSError.
        policy_path: shown in ``status``.
        log: called with a line for nsup's stderr when a handler fails.

    """

    def __init__(
        self,
        sup: Supervisor,
        *,
        reload: Callable[[], Awaitable[dict[str, list[str]]]],
        policy_path: str = "",
        log: Callable[[str], None] = lambda _line: None,
    ) -> None:
        """Prepare the server; :meth:`serve` runs it."""
        self.sup = sup
        self._reload = reload
        self.policy_path = policy_path
        self._log = log
        self.stopping = False  # set by nsup run when it begins to shut down
        self.allowed_uids = frozenset({0, os.geteuid()})
        self.clients = 0
        self.requests = 0
        self._commands: dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]] = {
            "ping": self._cmd_ping,
            "status": self._cmd_status,
            "start": self._cmd_start,
            "stop": self._cmd_stop,
            "restart": self._cmd_restart,
            "signal": self._cmd_signal,
            "reload": self._cmd_reload,
            "reopen-logs": self._cmd_reopen_logs,
        }

    def statistics(self) -> dict[str, int]:
        """Return the clients connected now and the requests answered so far."""
        return {"clients": self.clients, "requests": self.requests}

    async def serve(self, sock: socket.socket) -> None:
        """Accept clients on the listening *sock* until cancelled."""
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
        await trio.serve_listeners(self._handle, [listener])

    # --- one client -------------------------------------------------------

    async def _handle(self, stream: trio.SocketStream) -> None:
        if self.clients >= MAX_CLIENTS:
            busy = self._error("busy", f"nsup serves at most {MAX_CLIENTS} clients at once; retry")
            refuse_without_waiting(stream, json.dumps(busy).encode() + b"\n")
            return
        self.clients += 1
        try:
            async with contained_client(stream, self._log, "control: a client's request failed"):
                await self._converse(stream)
        finally:
            self.clients -= 1

    async def _converse(self, stream: trio.SocketStream) -> None:
        uid = _peer_uid(stream.socket)
        if uid not in self.allowed_uids:
            await self._send(
                stream,
                self._error(
                    "permission_denied",
                    f"uid {uid} may not control this supervisor "
                    f"(only uid {os.geteuid()}, which runs it, and root)",
                ),
            )
            return
        reader = _LineReader(stream, MAX_LINE)
        while True:
            line: bytes | _TooLong | None = None
            with trio.move_on_after(IDLE_TIMEOUT):
                line = await reader.next_line()
            if line is None:
                return  # end of stream, or idle too long
            request_id = None
            try:
                request = self._decode(line)
                request_id = request.get("id")
                self._validate(request)
                if request["cmd"] == "events":
                    await self._events(stream, reader, request_id)
                    return
                reply = {
                    "v": PROTOCOL_VERSION,
                    "ok": True,
                    **await self._commands[request["cmd"]](request),
                }
            except _RequestError as exc:
                reply = self._error(exc.code, exc.message, **exc.extra)
            except Exception as exc:  # noqa: BLE001 - reported to the client, logged, survived
                self._log(f"control: request failed: {exc!r}")
                reply = self._error("internal", f"the request failed inside nsup: {exc!r}")
            if request_id is not None:
                reply["id"] = request_id
            self.requests += 1
            await self._send(stream, reply)

    @staticmethod
    def _decode(line: bytes | _TooLong) -> dict[str, Any]:
        if isinstance(line, _TooLong):
            raise _RequestError("too_long", f"a request line may be at most {MAX_LINE} bytes")
        try:
            request = json.loads(line)
        except (ValueError, RecursionError):
            raise _RequestError("bad_json", "a request is one JSON object on one line") from None
        if not isinstance(request, dict):
            raise _RequestError(
                "bad_request", 'a request is a JSON object, like {"v": 1, "cmd": "status"}'
            )
        return request

    def _validate(self, request: dict[str, Any]) -> None:
        if request.get("v") != PROTOCOL_VERSION:
            raise _RequestError(
                "unsupported_version",
                f"this nsup speaks protocol version {PROTOCOL_VERSION} (got 'v': {request.get('v')!r})",
                supported=[PROTOCOL_VERSION],
            )
        cmd = request.get("cmd")
        if cmd != "events" and cmd not in self._commands:
            known = ", ".join([*self._commands, "events"])
            raise _RequestError("unknown_command", f"unknown command {cmd!r}; known: {known}")

    @staticmethod
    def _error(code: str, message: str, **extra: Any) -> dict[str, Any]:
        return {
            "v": PROTOCOL_VERSION,
            "ok": False,
            "error": {"code": code, "message": message, **extra},
        }

    @staticmethod
    async def _send(
        stream: trio.SocketStream, message: dict[str, Any], limit: float = SEND_TIMEOUT
    ) -> None:
        with trio.fail_after(limit):
            await stream.send_all(json.dumps(message).encode() + b"\n")

    # --- commands ---------------------------------------------------------------

    def _is_stopping(self) -> bool:
        return self.stopping or self.sup.gave_up is not None or self.sup.finished

    def _names(self, request: dict[str, Any], *, required: bool) -> list[str]:
        names = request.get("names", [])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise _RequestError(
                "bad_request", f"'names' must be a list of service names (got {names!r})"
            )
        if required and not names:
            raise _RequestError(
                "bad_request", f"{request['cmd']!r} needs at least one service name in 'names'"
            )
        known = set(self.sup.status())
        for name in names:
            if name not in known and not any(k.rpartition(".")[0] == name for k in known):
                raise _RequestError(
                    "unknown_service",
                    f"no service {name!r} in this supervisor (known: {', '.join(self.sup.status())})",
                    service=name,
                )
        return names

    def _check_running(self) -> None:
        if self._is_stopping():
            raise _RequestError("shutting_down", "the supervisor is shutting down")

    async def _cmd_ping(self, request: dict[str, Any]) -> dict[str, Any]:
        del request
        return {"pid": os.getpid()}

    async def _cmd_status(self, request: dict[str, Any]) -> dict[str, Any]:
        names = self._names(request, required=False)
        wanted = set(names)
        services = [
            status_to_dict(s)
            for name, s in self.sup.status().items()
            if not wanted or name in wanted or name.rpartition(".")[0] in wanted
        ]
        return {
            "supervisor": {
                "pid": os.getpid(),
                "policy": self.policy_path,
                "started_at": self.sup.started_at,
                "uptime": max(0.0, time.time() - self.sup.started_at),
                "stopping": self._is_stopping(),
                "version": _nsup_version(),
                "protocol": PROTOCOL_VERSION,
            },
            "services": services,
        }

    async def _cmd_start(self, request: dict[str, Any]) -> dict[str, Any]:
        names = self._names(request, required=True)
        self._check_running()
        await self.sup.start(*names)
        return {"names": names}

    async def _cmd_stop(self, request: dict[str, Any]) -> dict[str, Any]:
        names = self._names(request, required=True)
        self._check_running()
        await self.sup.stop(*names)
        return {"names": names}

    async def _cmd_restart(self, request: dict[str, Any]) -> dict[str, Any]:
        names = self._names(request, required=True)
        self._check_running()
        await self.sup.restart(*names)
        return {"names": names}

    async def _cmd_signal(self, request: dict[str, Any]) -> dict[str, Any]:
        name = request.get("name")
        if not isinstance(name, str):
            raise _RequestError("bad_request", f"'signal' needs a service 'name' (got {name!r})")
        self._names({"names": [name], "cmd": "signal"}, required=True)
        signo = _parse_signal(request.get("signal"))
        sent = self.sup.signal(name, signo)
        if not sent:
            raise _RequestError("not_running", f"no instance of {name!r} is running", service=name)
        return {"name": name, "signal": signal.Signals(signo).name, "sent": sent}

    async def _cmd_reopen_logs(self, request: dict[str, Any]) -> dict[str, Any]:
        del request
        errors = self.sup.reopen_logs()
        if errors:
            raise _RequestError("reopen_failed", f"could not reopen: {'; '.join(errors)}")
        return {"files": sorted(self.sup._log_files())}  # noqa: SLF001 - nsup's own front end

    async def _cmd_reload(self, request: dict[str, Any]) -> dict[str, Any]:
        del request
        self._check_running()
        try:
            outcome = await self._reload()
        except PolicyError as exc:
            issues = [
                e.to_json() if hasattr(e, "to_json") else {"message": str(e)} for e in exc.errors
            ]
            raise _RequestError(
                "invalid_policy",
                f"the new policy is invalid; the old one keeps running:\n{exc}",
                issues=issues,
            ) from None
        except OSError as exc:
            raise _RequestError(
                "invalid_policy",
                f"cannot read the policy ({exc.strerror or exc}); the old one keeps running",
            ) from None
        return dict(outcome)

    # --- the event stream -----------------------------------------------------------

    async def _events(
        self, stream: trio.SocketStream, reader: _LineReader, request_id: object
    ) -> None:
        # Registered now, before the reply says so: no event is missed.
        subscription = self.sup.events()
        reply: dict[str, Any] = {"v": PROTOCOL_VERSION, "ok": True, "subscribed": True}
        if request_id is not None:
            reply["id"] = request_id
        async with subscription, trio.open_nursery() as nursery:

            async def watch_client() -> None:
                while await reader.next_line() is not None:
                    pass  # nothing more is expected; the stream ends when the client closes
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch_client)
            await self._send(stream, reply)
            async for event in subscription:
                if event.kind == "lagged":
                    lagged = self._error("lagged", f"dropped: {event.message}")
                    await self._send(stream, lagged, EVENTS_SEND_TIMEOUT)
                    break
                event_line = {"v": PROTOCOL_VERSION, **event.to_dict()}
                await self._send(stream, event_line, EVENTS_SEND_TIMEOUT)
            nursery.cancel_scope.cancel()
