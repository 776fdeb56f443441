"""A real ``nsup run`` for the control and HTTP tests, and small clients for it.

No test here: this module holds the harness that ``test_control.py`` and
``test_http.py`` share.  ``NsupRun`` starts ``python -m nsup run`` on a policy
written to a temporary directory, reads its stderr on a thread (so a chatty
supervisor never blocks on a full pipe) and waits for the line that prints
the control socket's path, which is printed only once the socket listens.
At the end it sends SIGTERM and waits; if nsup hangs it is killed by pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Self

DEADLINE = 30.0


class NsupRun:
    """One ``nsup run POLICY`` subprocess."""

    def __init__(
        self, policy: str, *, env: dict[str, str] | None = None, stdout: Any = None
    ) -> None:
        self.policy = policy
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nsup", "run", policy],
            stdout=subprocess.DEVNULL if stdout is None else stdout,
            stderr=subprocess.PIPE,
            env=env,
            cwd=os.path.dirname(policy),
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._eof = False
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()
        try:
            self.control = self.wait_line("control socket ").partition("control socket ")[2]
        except BaseException:
            self.stop()
            raise

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            with self._cond:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def wait_line(self, needle: str, start: int = 0, timeout: float = DEADLINE) -> str:
        """Return the first stderr line from index *start* on that contains *needle*."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines[start:]:
                    if needle in line:
                        return line
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    raise AssertionError(
                        f"nsup never printed {needle!r}; stderr:\n" + "\n".join(self.lines)
                    )
                self._cond.wait(left)

    def nsup(
        self, *args: str, timeout: float = DEADLINE, **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run ``python -m nsup ARGS`` (a control command) and capture its output."""
        return subprocess.run(
            [sys.executable, "-m", "nsup", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **kwargs,
        )

    def ctl(self, command: str, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """Run ``nsup COMMAND --control PATH ARGS``."""
        return self.nsup(command, "--control", self.control, *args, **kwargs)

    def request(self, cmd: str, **fields: Any) -> dict[str, Any]:
        """One request over a fresh connection; return the reply."""
        with Conn(self.control) as conn:
            return conn.ask({"v": 1, "cmd": cmd, **fields})

    def status(self) -> dict[str, dict[str, Any]]:
        """Return the services by name, from the socket."""
        reply = self.request("status")
        assert reply["ok"], reply
        return {s["name"]: s for s in reply["services"]}

    def settle(
        self, states: tuple[str, ...] = ("up", "ended"), ended: tuple[str, ...] = ()
    ) -> None:
        """Follow the event stream until every service is in one of *states* and *ended* have ended."""

        def settled() -> bool:
            status = self.status()
            in_states = all(s["state"] in states for s in status.values())
            return in_states and all(status[name]["state"] == "ended" for name in ended)

        with Conn(self.control) as conn:
            assert conn.ask({"v": 1, "cmd": "events"})["subscribed"]
            while not settled():
                assert conn.receive() is not None, "the supervisor stopped"

    def stop(self) -> int:
        """SIGTERM, then wait; SIGKILL by pid if it hangs.  Return its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("nsup run did not exit within 30 s of SIGTERM") from None
        self._thread.join(DEADLINE)
        assert self.proc.stderr is not None
        self.proc.stderr.close()
        return code


class Conn:
    """A raw connection to the control socket, for protocol-level tests."""

    def __init__(self, path: str, timeout: float = DEADLINE) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except OSError:
            self.sock.close()
            raise
        self.file = self.sock.makefile("rb")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
        self.sock.close()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def receive(self) -> dict[str, Any] | None:
        line = self.file.readline()
        return json.loads(line) if line else None

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        self.send_raw(json.dumps(request).encode() + b"\n")
        reply = self.receive()
        assert reply is not None, "the supervisor closed the connection"
        return reply


def write_policy(directory: str, text: str, name: str = "app.toml") -> str:
    """Write *text* as a policy file in *directory*; return its path."""
    path = os.path.join(directory, name)
    with open(path, "w") as f:
        f.write(text)
    return path
