"""``[supervisor] health``: ``/healthz``, ``/readyz`` and ``/metrics`` over HTTP.

A deliberately tiny HTTP/1.1 server on trio, in the supervisor's own event
loop (no threads): GET and HEAD only, one request per connection
(``Connection: close``), a request head of at most :data:`MAX_HEAD` bytes that
must arrive within :data:`HEAD_TIMEOUT` seconds.  That is all a Kubernetes
probe or a Prometheus scrape needs, and it leaves nothing for a slow or
hostile client to hold on to.

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

if TYPE_CHECKING:
    from collections.abc import Callable

    from .._engine.runner import ServiceStatus
    from .._engine.supervisor import Supervisor

__all__ = ["HEAD_TIMEOUT", "MAX_HEAD", "HealthServer", "open_health_socket", "render_metrics"]

MAX_HEAD = 8192
HEAD_TIMEOUT = 10.0
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
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
    if status.ready:
        return True
    last = status.last_exit
    return status.state == "ended" and last is not None and last.success


def not_ready(sup: Supervisor) -> list[str]:
    """Return the instances that keep ``/readyz`` from answering 200."""
    return [name for name, s in sup.status().items() if not _is_ready(s)]


def render_metrics(sup: Supervisor, now: float | None = None) -> str:
    """Render *sup*'s state in the Prometheus text exposition format.

    Per service (label ``service``): ``nsup_service_up``,
    ``nsup_service_ready``, ``nsup_service_restarts_total``,
    ``nsup_service_last_exit_code`` (only once it has exited),
    ``nsup_service_start_time_seconds`` (only once it has started) and
    ``nsup_service_state`` (1 for the current state).  For the supervisor:
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
    family("nsup_service_restarts_total", "counter", "Automatic restarts of the service.",
           [(label(n), float(s.restarts)) for n, s in statuses.items()])  # fmt: skip
    family("nsup_service_last_exit_code", "gauge", "Exit code of the last run (128+N for signal N).",
           [(label(n), float(s.last_exit.exit_code)) for n, s in statuses.items() if s.last_exit is not None])  # fmt: skip
    family("nsup_service_start_time_seconds", "gauge", "Unix time of the service's last start.",
           [(label(n), s.started_at) for n, s in statuses.items() if s.started_at is not None])  # fmt: skip
    states = ("down", "starting", "up", "stopping", "restarting", "backoff", "ended")
    family("nsup_service_state", "gauge", "1 for the service's current state.",
           [(label(n, state=st), float(s.state == st)) for n, s in statuses.items() for st in states])  # fmt: skip
    lines = []
    for name, kind, help_text, samples in families:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(f"{name}{labels} {value!r}" for labels, value in samples)
    return "\n".join(lines) + "\n"


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

    async def serve(self, sock: socket.socket) -> None:
        """Answer requests on the listening *sock* until cancelled."""
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
        await trio.serve_listeners(self._handle, [listener])

    async def _handle(self, stream: trio.SocketStream) -> None:
        try:
            status, headers, body, head_only = await self._answer(stream)
            reason = _REASONS.get(status, "")
            head = [
                f"HTTP/1.1 {status} {reason}",
                *headers,
                f"Content-Length: {len(body)}",
                "Connection: close",
            ]
            await stream.send_all(
                ("\r\n".join(head) + "\r\n\r\n").encode() + (b"" if head_only else body)
            )
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except Exception as exc:  # noqa: BLE001 - one client's failure must not reach the supervisor
            self._log(f"health: request failed: {exc!r}")
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()

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
        stopping = self._stopping() or self.sup.gave_up is not None or self.sup.done.is_set()
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
                render_metrics(self.sup).encode(),
                head_only,
            )
        return 404, text, b"not found; try /healthz, /readyz or /metrics\n", head_only
