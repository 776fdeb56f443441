"""Refused connections while a server restarts: nsup with socket activation, without, supervisord.

Run as root from the repository::

    .venv/bin/python bench/sockets.py [--restarts 50] [--json]

One echo server (stdlib Python) is restarted ``--restarts`` times while a
client thread connects, sends a line and reads it back, as fast as it can;
after each restart the next waits until 40 more connections were served, so
the connections spread over every stop, start and run.  Each row counts the connections that
were served, refused (``ECONNREFUSED``: nothing listened), or failed otherwise
(reset, timeout, wrong answer).

- ``nsup, socket activation``: ``sockets = [{ listen = ... }]``: nsup binds the
  port once and passes it to every run as fd 3, so connections that arrive
  between two runs wait in the socket's queue.  The server runs in its own
  network namespace (only the passed socket reaches it) and says ``READY=1``
  (``ready = { notify = true }``) once its SIGTERM handler is in place.
- ``nsup, server binds``: the same server binds the port itself on each run
  (``SO_REUSEADDR``), in the host's network namespace, with a ``tcp`` ready
  probe so that each restart waits until it listens again.
- ``supervisord``: the server binds itself; each restart is
  ``stopProcess`` + ``startProcess`` over supervisord's XML-RPC.  It comes from
  ``bench/.venv-compare`` (made by ``bench/restart.py``) or PATH; skipped
  with a note when absent.

The servers stop cleanly on SIGTERM: they finish the connection in hand, so
every refusal counted is one the supervisor's design allowed.  A benchmark,
not a test: the exit code is 0 whatever the counts.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import xmlrpc.client
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from restart import UnixTransport, find_tools  # noqa: E402 - the sibling bench module

import nsup  # noqa: E402 - after the path set-up above

PER_RESTART = 40  # connections served between two restarts
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

ECHO = textwrap.dedent(
    """
    import os, select, signal, socket, sys
    r, w = os.pipe()
    os.set_blocking(w, False)
    signal.set_wakeup_fd(w)
    signal.signal(signal.SIGTERM, lambda *_: None)
    def notify_ready():  # sd_notify(READY=1): only now may nsup stop this run
        if os.environ.get("NOTIFY_SOCKET"):
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as n:
                n.sendto(b"READY=1", os.environ["NOTIFY_SOCKET"])
    if os.environ.get("LISTEN_PID") == str(os.getpid()):
        s = socket.socket(fileno=3)
    else:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", int(sys.argv[1])))
        s.listen(4096)
    notify_ready()
    while True:
        ready, _, _ = select.select([s, r], [], [])
        if r in ready:
            break
        c, _ = s.accept()
        c.sendall(c.recv(64))
        c.close()
    """
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Client:
    """Connects and echoes on a thread until stopped; counts what happened."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.counts = {"served": 0, "refused": 0, "failed": 0}
        self._changed = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Client:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        with self._changed:
            self._stop = True
        self._thread.join()

    def wait_served(self, more: int) -> None:
        """Return once *more* connections were served than when called (60 s at most)."""
        with self._changed:
            goal = self.counts["served"] + more
            self._changed.wait_for(lambda: self.counts["served"] >= goal, timeout=60)

    def _run(self) -> None:
        n = 0
        while not self._stop:
            n += 1
            message = b"%d\n" % n
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=10) as conn:
                    conn.sendall(message)
                    answer = conn.recv(64)
                outcome = "served" if answer == message else "failed"
            except ConnectionRefusedError:
                outcome = "refused"
            except OSError:
                outcome = "failed"
            with self._changed:
                self.counts[outcome] += 1
                self._changed.notify_all()
            if outcome == "refused":
                time.sleep(0.001)  # nothing listens: do not spin


def row(label: str, restarts: int, seconds: float, counts: dict[str, int]) -> dict[str, Any]:
    return {"row": label, "restarts": restarts, "seconds": round(seconds, 2), **counts}


async def nsup_row(restarts: int, *, activated: bool) -> dict[str, Any]:
    port = free_port()
    service: dict[str, Any] = {"command": [PYTHON, "-c", ECHO, str(port)], "restart": "always"}
    if activated:
        service["sockets"] = [{"listen": f"127.0.0.1:{port}"}]
        service["namespaces"] = ["pid", "mount", "net"]
        service["ready"] = {"notify": True}
    else:
        service["namespaces"] = ["pid", "mount"]
        service["ready"] = {"tcp": f"127.0.0.1:{port}"}
    policy = nsup.Policy.from_dict({"services": {"echo": service}})
    async with nsup.open_supervisor(policy, output=lambda _n, _l: None) as sup:
        with Client(port) as client:
            start = time.monotonic()
            for _ in range(restarts):
                await sup.restart("echo")
                await trio.to_thread.run_sync(client.wait_served, PER_RESTART)
            seconds = time.monotonic() - start
    label = "nsup, socket activation" if activated else "nsup, server binds"
    return row(label, restarts, seconds, client.counts)


def supervisord_row(restarts: int) -> dict[str, Any]:
    tools = find_tools(install=False)
    if not tools.supervisord:
        return {"row": "supervisord", "skipped": "; ".join(tools.notes) or "not installed"}
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="nsup-bench-") as tmp:
        work = Path(tmp)
        (work / "echo.py").write_text(ECHO)
        conf = work / "supervisord.conf"
        conf.write_text(
            textwrap.dedent(
                f"""
                [unix_http_server]
                file={work}/supervisor.sock
                [supervisord]
                nodaemon=true
                logfile={work}/supervisord.log
                pidfile={work}/supervisord.pid
                user=root
                [rpcinterface:supervisor]
                supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
                [program:echo]
                command={PYTHON} {work}/echo.py {port}
                autorestart=true
                startsecs=0
                stopwaitsecs=10
                stdout_logfile=NONE
                stderr_logfile=NONE
                """
            )
        )
        proc = subprocess.Popen([tools.supervisord, "-c", str(conf)], stdout=subprocess.DEVNULL)
        try:
            rpc = xmlrpc.client.ServerProxy(
                "http://localhost/RPC2", transport=UnixTransport(str(work / "supervisor.sock"))
            ).supervisor
            deadline = time.monotonic() + 60
            while True:  # supervisord gives no event for "up": poll its RPC, with a deadline
                try:
                    if rpc.getProcessInfo("echo")["statename"] == "RUNNING":
                        break
                except (OSError, xmlrpc.client.Error):
                    pass
                if time.monotonic() > deadline:
                    return {"row": "supervisord", "skipped": "echo never came up"}
                time.sleep(0.05)
            with Client(port) as client:
                start = time.monotonic()
                for _ in range(restarts):
                    rpc.stopProcess("echo", True)
                    rpc.startProcess("echo", True)
                    client.wait_served(PER_RESTART)
                seconds = time.monotonic() - start
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    return row(f"supervisord {tools.versions.get('supervisor', '')}".strip(), restarts, seconds, client.counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--restarts", type=int, default=50)
    parser.add_argument("--json", action="store_true", help="one JSON object")
    args = parser.parse_args()
    rows = [
        trio.run(functools.partial(nsup_row, args.restarts, activated=True)),
        trio.run(functools.partial(nsup_row, args.restarts, activated=False)),
        supervisord_row(args.restarts),
    ]
    if args.json:
        print(json.dumps({"rows": rows}))
        return
    print(f"{'row':<28} {'restarts':>8} {'seconds':>8} {'served':>8} {'refused':>8} {'failed':>7}")
    for r in rows:
        if "skipped" in r:
            print(f"{r['row']:<28} skipped: {r['skipped']}")
            continue
        print(
            f"{r['row']:<28} {r['restarts']:>8} {r['seconds']:>8} {r['served']:>8} "
            f"{r['refused']:>8} {r['failed']:>7}"
        )


if __name__ == "__main__":
    main()
