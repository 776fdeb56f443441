"""``[supervisor] health``: ``/healthz``, ``/readyz`` and ``/metrics`` over HTTP.

A deliberately tiny HTTP/1.1 server on trio, in the supervisor's own event
loop (no threads): GET and HEAD only, one request per connection
(``Connection: close``), a request head of at most :data:`MAX_HEAD` bytes that
must arrive within :data:`HEAD_TIMEOUT` seconds, an answer the client must
take within :data:`SEND_TIMEOUT` seconds, and at most :data:`MAX_CONNECTIONS`
connections at once (one more gets a 503 written without waiting, and is
closed).  ``/metrics`` is rendered at most once per :data:`METRICS_MAX_AGE`
seconds and the same bytes are shared by every scrape, so clients that
connect and never read cost a bounded amount of memory.  That is all a
Kubernetes probe or a Prometheus scrape needs, and it leaves nothing for a
slow or hostile client to hold on to.

- ``/healthz``: 200 while the supervisor's loop answers (the body says
  ``stopping`` during a shutdown).
- ``/readyz``: 200 when every service is ready, or has ended cleanly (a
  one-shot that exited 0 does not make the whole unready); else 503 naming the
  services that are not, and 503 during a shutdown.
- ``/metrics``: the Prometheus text exposition format, version 0.0.4.
"""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING

import trio

from .server import contained_client, refuse_without_waiting

if TYPE_CHECKING:
    from collections.abc import Callable

    from .._engine.runner import ServiceStatus
    from .._engine.supervisor import Supervisor

__all__ = [
    "HEAD_TIMEOUT",
    "MAX_CONNECTIONS",
    "MAX_HEAD",
    "METRICS_MAX_AGE",
    "SEND_TIMEOUT",
    "HealthServer",
    "open_health_socket",
    "render_metrics",
]

MAX_HEAD = 8192
HEAD_TIMEOUT = 10.0  # seconds a request head may take to arrive
SEND_TIMEOUT = 10.0  # seconds an answer may take to be taken by the client
MAX_CONNECTIONS = 64  # connections served at once; more get a 503, written without waiting
METRICS_MAX_AGE = 1.0  # seconds one rendering of /metrics is shared by every scrape
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 5\r\nConnection: close\r\n\r\nbusy\n"
)
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


def open_health_socket(host: str, port: int) -> socket.socket:
    """Bind and listen on *host*:*port* (before trio starts, so a busy port stops nsup early).

    Raises:
        OSError: the address cannot be used; the message names it.

    """
    try:
        sock = socket.create_server((host, port), reuse_port=False)
    except OSError as exc:
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        raise OSError(
            exc.errno, f"cannot serve [supervisor] health on {where}: {exc.strerror or exc}"
        ) from None
    sock.set_inheritable(False)
    return sock


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _is_ready(status: ServiceStatus) -> bool:
    return status.ready or status.completed  # a oneshot (or any service) that ended successfully


def not_ready(sup: Supervisor) -> list[str]:
    """Return the instances that keep ``/readyz`` from answering 200."""
    return [name for name, s in sup.status().items() if not _is_ready(s)]


def render_metrics(sup: Supervisor, now: float | None = None) -> str:
    """Render *sup*'s state in the Prometheus text exposition format.

    Per service (label ``service``): ``nsup_service_up``,
    ``nsup_service_ready``, ``nsup_service_restarts_total``,
    ``nsup_service_last_exit_code`` (only once it has exited),
    ``nsup_service_start_time_seconds`` (only once it has started) and
    ``nsup_service_state`` (1 for the current state), and from the service's
    cgroup, where a hierarchy counts them, ``nsup_service_cpu_seconds_total``,
    ``nsup_service_memory_bytes``, ``nsup_service_memory_peak_bytes`` and
    ``nsup_service_tasks`` (of the running process: they start again at each
    restart), and ``nsup_service_oom_kills_total``.  For the supervisor:
    ``nsup_supervisor_uptime_seconds``, ``nsup_supervisor_start_time_seconds``,
    ``nsup_supervisor_children`` and ``nsup_supervisor_services``.
    """
    now = time.time() if now is None else now
    statuses = sup.status()
    families: list[tuple[str, str, str, list[tuple[str, float]]]] = []

    def family(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        families.append((name, kind, help_text, samples))

    def label(name: str, **extra: str) -> str:
        pairs = [("service", name), *extra.items()]
        return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}"

    family("nsup_supervisor_uptime_seconds", "gauge", "Seconds since this nsup started.",
           [("", max(0.0, now - sup.started_at))])  # fmt: skip
    family(
        "nsup_supervisor_start_time_seconds",
        "gauge",
        "Unix time this nsup started.",
        [("", sup.started_at)],
    )
    family("nsup_supervisor_children", "gauge", "Service processes running now.",
           [("", sum(s.pid is not None for s in statuses.values()))])  # fmt: skip
    family(
        "nsup_supervisor_services",
        "gauge",
        "Service instances in the policy.",
        [("", len(statuses))],
    )
    family("nsup_service_up", "gauge", "1 while the service's process runs.",
           [(label(n), float(s.pid is not None)) for n, s in statuses.items()])  # fmt: skip
    family("nsup_service_ready", "gauge", "1 while the service is up and ready.",
           [(label(n), float(s.ready)) for n, s in statuses.items()])  # fmt: skip
    family("nsup_service_restarts_total", "counter", "Restarts of the service (automatic, group and manual).",
           [(label(n), float(s.restarts)) for n, s in statuses.items()])  # fmt: skip
    family("nsup_service_last_exit_code", "gauge", "Exit code of the last run (128+N for signal N).",
           [(label(n), float(s.last_exit.exit_code)) for n, s in statuses.items() if s.last_exit is not None])  # fmt: skip
    family("nsup_service_start_time_seconds", "gauge", "Unix time of the service's last start.",
           [(label(n), s.started_at) for n, s in statuses.items() if s.started_at is not None])  # fmt: skip
    dropped = sup._output_dropped()  # noqa: SLF001 - nsup's own front end
    family("nsup_service_output_dropped_lines_total", "counter",
           "Lines of the service's output dropped because nsup's stdout was not read fast enough.",
           [(label(n), float(dropped.get(n, 0))) for n in statuses])  # fmt: skip
    family("nsup_log_dropped_lines_total", "counter",
           "Lines a log file, the journal or syslog did not take (a failed write, an absent or full receiver).",
           [(f'{{target="{_escape(t)}"}}', float(n)) for t, n in sorted(sup._log_dropped().items())])  # fmt: skip  # noqa: SLF001
    states = (
        "down",
        "starting",
        "up",
        "stopping",
        "restarting",
        "backoff",
        "ended",
        "failed",
        "blocked",
    )
    family("nsup_service_state", "gauge", "1 for the service's current state.",
           [(label(n, state=st), float(s.state == st)) for n, s in statuses.items() for st in states])  # fmt: skip
    for metric, kind, help_text, attr in _RESOURCES:
        samples = [(label(n), float(v)) for n, s in statuses.items() if (v := getattr(s, attr)) is not None]  # fmt: skip
        family(metric, kind, help_text, samples)
    lines = []
    for name, kind, help_text, samples in families:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(f"{name}{labels} {value!r}" for labels, value in samples)
    return "\n".join(lines) + "\n"


# Per-service figures from the cgroup: (metric, type, help, ServiceStatus attribute).
_RESOURCES = (
    ("nsup_service_cpu_seconds_total", "counter",
     "CPU time used by the service's running process and its descendants.", "cpu_seconds"),
    ("nsup_service_memory_bytes", "gauge", "Memory charged to the service's cgroup now.",
     "memory_bytes"),
    ("nsup_service_memory_peak_bytes", "gauge",
     "Most memory charged to the service's cgroup at once during this run.", "memory_peak_bytes"),
    ("nsup_service_tasks", "gauge", "Tasks in the service's cgroup now.", "tasks"),
    ("nsup_service_oom_kills_total", "counter",
     "Processes of the service that the kernel's OOM killer ended.", "oom_kills"),
)  # fmt: skip


class HealthServer:
    """Serves ``/healthz``, ``/readyz`` and ``/metrics`` for one supervisor.

    Args:
        sup: the running supervisor.
        stopping: returns True once nsup has begun to shut down.
        log: called with a line for nsup's stderr when a handler fails.

    """

    def __init__(
        self,
        sup: Supervisor,
        stopping: Callable[[], bool] = lambda: False,
        log: Callable[[str], None] = lambda _line: None,
    ) -> None:
        """Prepare the server; :meth:`serve` runs it."""
        self.sup = sup
        self._stopping = stopping
        self._log = log
        self.connections = 0
        self._metrics: tuple[float, bytes] = (-METRICS_MAX_AGE, b"")

    def _metrics_body(self) -> bytes:
        rendered_at, body = self._metrics
        now = trio.current_time()
        if now - rendered_at >= METRICS_MAX_AGE:
            body = render_metrics(self.sup).encode()
            self._metrics = (now, body)
        return body

    async def serve(self, sock: socket.socket) -> None:
        """Answer requests on the listening *sock* until cancelled."""
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
        await trio.serve_listeners(self._handle, [listener])

    async def _handle(self, stream: trio.SocketStream) -> None:
        if self.connections >= MAX_CONNECTIONS:
            refuse_without_waiting(stream, _BUSY)
            return
        self.connections += 1
        try:
            async with contained_client(stream, self._log, "health: request failed"):
                await self._respond(stream)
        finally:
            self.connections -= 1

    async def _respond(self, stream: trio.SocketStream) -> None:
        """Answer one request: read it, then send the head and (unless HEAD) the body."""
        status, headers, body, head_only = await self._answer(stream)
        reason = _REASONS.get(status, "")
        head = [
            f"HTTP/1.1 {status} {reason}",
            *headers,
            f"Content-Length: {len(body)}",
            "Connection: close",
        ]
        with trio.fail_after(SEND_TIMEOUT):
            await stream.send_all(("\r\n".join(head) + "\r\n\r\n").encode())
            if not head_only:
                await stream.send_all(body)

    async def _read_head(self, stream: trio.SocketStream) -> bytes | int:
        data = b""
        with trio.move_on_after(HEAD_TIMEOUT):
            while b"\r\n\r\n" not in data and b"\n\n" not in data:
                if len(data) > MAX_HEAD:
                    return 431
                chunk = await stream.receive_some(4096)
                if not chunk:
                    return 400
                data += chunk
            return data
        return 408

    async def _answer(self, stream: trio.SocketStream) -> tuple[int, list[str], bytes, bool]:  # noqa: PLR0911 - one return per answer
        text = ["Content-Type: text/plain; charset=utf-8"]
        head = await self._read_head(stream)
        if isinstance(head, int):
            return head, text, f"{_REASONS[head].lower()}\n".encode(), False
        parts = head.split(b"\r\n", 1)[0].split(b"\n", 1)[0].split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            return 400, text, b"bad request\n", False
        method, target = parts[0], parts[1].decode("latin-1").split("?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            return 405, [*text, "Allow: GET, HEAD"], b"only GET and HEAD\n", False
        head_only = method == b"HEAD"
        # From the moment a stop begins (a signal, a give-up, the last service ending).
        stopping = self._stopping() or self.sup.gave_up is not None or self.sup.finished
        if target == "/healthz":
            return 200, text, b"stopping\n" if stopping else b"ok\n", head_only
        if target == "/readyz":
            if stopping:
                return 503, text, b"not ready: nsup is stopping\n", head_only
            waiting = not_ready(self.sup)
            if waiting:
                return 503, text, f"not ready: {', '.join(waiting)}\n".encode(), head_only
            return 200, text, b"ready\n", head_only
        if target == "/metrics":
            return (
                200,
                [f"Content-Type: {METRICS_TYPE}"],
                self._metrics_body(),
                head_only,
            )
        return 404, text, b"not found; try /healthz, /readyz or /metrics\n", head_only
