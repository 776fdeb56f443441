"""Every command line in README.md and docs/*.md does what its comment says.

The lines are collected from the ```sh blocks (a heredoc block stays one
example).  Each must be listed in ``EXAMPLES`` below, either with the check
that runs it here or with the reason it cannot run in the suite, so an
example added to the docs fails this test until someone decides which.
Commands run through ``sh`` from the repository root, with the venv's
``nsup`` first on the ``PATH``.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BIN = str(Path(sys.executable).parent)
BLOCK = re.compile(r"^```sh\n(.*?)^```", re.MULTILINE | re.DOTALL)


def collect() -> dict[str, str]:
    """Return ``{example: "FILE:LINE"}`` for every command line in a ```sh block."""
    found: dict[str, str] = {}
    for path in DOCS:
        text = path.read_text()
        for block in BLOCK.finditer(text):
            line = text[: block.start()].count("\n") + 2
            body = re.sub(r"\s*\\\n\s*", " ", block[1])
            if "<<" in body:  # a heredoc and the command using it: one example
                found.setdefault(body.strip(), f"{path.name}:{line}")
                continue
            for offset, raw in enumerate(body.splitlines()):
                command = raw.strip()
                if command and not command.startswith("#"):
                    found.setdefault(command, f"{path.name}:{line + offset}")
    return found


def environment() -> dict[str, str]:
    """The venv's nsup first on PATH; a private runtime dir, so control sockets never clash."""
    runtime = Path(os.environ["NSUP_DOC_RUNTIME"])
    return {
        **os.environ,
        "PATH": f"{BIN}:{os.environ.get('PATH', os.defpath)}",
        "XDG_RUNTIME_DIR": str(runtime),
    }


@pytest.fixture(autouse=True)
def _private_runtime(tmp_path, monkeypatch):
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    monkeypatch.setenv("NSUP_DOC_RUNTIME", str(runtime))


def sh(command: str, cwd: Path = ROOT, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", "-c", command],
        cwd=cwd,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        **kwargs,  # type: ignore[arg-type]
    )


def code_part(example: str) -> str:
    """Drop the comment (``  # ...``) and, for ``a && b && nsup ...``, the set-up before nsup."""
    command = example.split("  #", maxsplit=1)[0].strip()
    return command[command.rindex("&& nsup") + 3 :] if "&& nsup" in command else command


class LiveRun:
    """A real ``nsup run`` whose event lines on stderr are read as they come."""

    def __init__(self, command: str, cwd: Path = ROOT) -> None:
        self.proc = subprocess.Popen(
            ["sh", "-c", f"exec {command}"],
            cwd=cwd,
            env=environment(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.lines: list[str] = []
        self._buffer = b""

    def wait_for(self, pattern: str, since: int = 0, timeout: float = 30) -> re.Match[str]:
        """Return the first line from index *since* on that matches *pattern*, reading as needed.

        Fails after *timeout* seconds, or when nsup ends first.
        """
        regex = re.compile(pattern)
        for line in self.lines[since:]:
            if match := regex.search(line):
                return match
        deadline = time.monotonic() + timeout
        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(left):
                    pytest.fail(f"no line matching {pattern!r} in time; got {self.lines}")
                chunk = os.read(fd, 65536)
                if not chunk:
                    pytest.fail(f"nsup ended before {pattern!r}; got {self.lines}")
                self._buffer += chunk
                *complete, self._buffer = self._buffer.split(b"\n")
                new = [line.decode() for line in complete]
                self.lines += new
                for line in new:
                    if match := regex.search(line):
                        return match

    def finish(self, signo: int = signal.SIGTERM) -> int:
        """Send *signo*, read the rest of stderr, and return the exit code."""
        self.proc.send_signal(signo)
        _, rest = self.proc.communicate(timeout=60)
        self.lines += (self._buffer + rest).decode().splitlines()
        return self.proc.returncode

    def close(self) -> None:
        """Stop nsup as a user would (SIGTERM: it stops its services), else kill it."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.communicate()


@pytest.fixture
def live():
    runs: list[LiveRun] = []

    def start(command: str, cwd: Path = ROOT) -> LiveRun:
        runs.append(LiveRun(command, cwd))
        return runs[-1]

    yield start
    for run in runs:
        run.close()


# --- the checks, one per runnable example ----------------------------------------------


def try_it(example: str, **_: object) -> None:
    """README "Try it": prints demo, a process table of three, and a network with only lo."""
    result = sh(code_part(example))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "demo"
    table = lines[1 : lines.index(next(line for line in lines if "Inter-" in line))]
    assert len(table) == 1 + 3, table  # the header and three processes
    interfaces = [line.split(":")[0].strip() for line in lines[len(table) + 3 :]]
    assert interfaces == ["lo"]


def check_web_and_db(example: str, **_: object) -> None:
    result = sh(code_part(example))
    assert (result.returncode, result.stderr) == (0, "")
    assert [line.split(":")[0] for line in result.stdout.splitlines()] == ["db", "migrate", "web"]


def run_web_and_db(example: str, live: Callable[..., LiveRun], **_: object) -> None:
    """Answers the host through socket activation; Ctrl-C / SIGTERM: web stops first, then db; exit 0."""
    run = live(code_part(example))
    run.wait_for(r"^nsup: web: ready$")
    assert run.finish(signal.SIGTERM) == 0
    stops = [line for line in run.lines if re.match(r"nsup: (web|db): stopping$", line)]
    assert stops == ["nsup: web: stopping", "nsup: db: stopping"]


def run_crash_loop(example: str, **_: object) -> None:
    """Backoff 100ms, 200ms, 400ms... then gives up: exit 1."""
    result = sh(code_part(example))
    assert result.returncode == 1, result.stderr
    delays = re.findall(r"nsup: flaky: restarting in (\S+)", result.stderr)
    assert delays[:3] == ["100ms", "200ms", "400ms"]
    assert result.stderr.splitlines()[-1].startswith("nsup: gave up: 'flaky' made more than")


def run_one_for_all(example: str, live: Callable[..., LiveRun], **_: object) -> None:
    """Kill one worker: the whole group restarts."""
    run = live(code_part(example))
    pid = int(run.wait_for(r"^nsup: worker\.1: started \(pid (\d+)\)$")[1])
    for name in ("coordinator", "worker.0", "worker.1", "worker.2"):
        run.wait_for(rf"^nsup: {re.escape(name)}: ready$")
    mark = len(run.lines)
    os.kill(pid, signal.SIGKILL)
    run.wait_for(r"^nsup: worker\.1: killed by SIGKILL$", mark)
    for name in ("coordinator", "worker.0", "worker.2"):
        run.wait_for(rf"^nsup: {re.escape(name)}: stopping$", mark)
    for name in ("coordinator", "worker.0", "worker.1", "worker.2"):
        run.wait_for(rf"^nsup: {re.escape(name)}: started", mark)
    assert run.finish(signal.SIGTERM) == 0


def isolated_workers(example: str, **_: object) -> None:
    command = code_part(example).replace("python -m pytest", f"{sys.executable} -m pytest", 1)
    result = sh(f"{command} -q -p no:cacheprovider")
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout


def app_toml(example: str, live: Callable[..., LiveRun], tmp_path: Path) -> None:
    """docs/testing.md: write app.toml, run it, Ctrl-C stops it gracefully."""
    heredoc, _, command = example.rpartition("\n")
    assert sh(heredoc, cwd=tmp_path).returncode == 0
    run = live(code_part(command), cwd=tmp_path)
    run.wait_for(r"^nsup: web: ready$")
    assert run.finish(signal.SIGINT) == 0
    assert "nsup: every service is down; exiting" in run.lines


EXAMPLES: dict[str, Callable[..., None] | str] = {
    "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && nsup exec --ns "
    "pid,mount,net,uts --hostname demo -- sh -c 'hostname; ps -e; cat /proc/net/dev'": try_it,
    "python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[test]' && python -m "
    "pytest": "installs nsup and runs the whole suite: this suite is that command",
    "nsup check examples/web-and-db.toml      # validate: one line per service, or every error "
    "(exit 2)": check_web_and_db,
    "nsup run examples/web-and-db.toml        # then: curl http://127.0.0.1:8080/ from the "
    "host": run_web_and_db,
    "nsup run examples/sidecar.toml           # a sidecar in web's network namespace probes "
    "web's loopback port": "tests/test_lifecycle.py runs this example and checks what the "
    "sidecar sees",
    "docker build -t nsup-example -f examples/container/Dockerfile .": "needs a Docker engine; "
    "none runs on this machine (tests/test_orchestrator.py builds the image where one can)",
    "docker run --rm -p 8080:8080 -p 9100:9100 nsup-example": "needs a Docker engine; none "
    "runs on this machine",
    "nsup run examples/crash-loop.toml        # backoff 100ms, 200ms, 400ms... then gives up: "
    "exit 1": run_crash_loop,
    "nsup run examples/one-for-all.toml       # kill one worker: the whole group "
    "restarts": run_one_for_all,
    "python -m pytest examples/isolated-workers      # the complete example project": (
        isolated_workers
    ),
    "python -m pytest examples/isolated-workers": isolated_workers,
    "nsup exec [--ns LIST] [--hostname NAME] [--no-init] [--memory SIZE] [--pids N] "
    "[--bind SRC:DST] [--ro-bind SRC:DST] [--tmpfs DST] [--cwd DIR] [--env K=V] [--user "
    "NAME|UID] [--group NAME|GID] [--umask MODE] [--env-file PATH] [--clear-env] -- CMD "
    "[ARG...]": "a synopsis of the options, not a command",
    "# 2. nsup run: a policy\ncat > app.toml <<'EOF'\n[services.web]\ncommand = [\"python3\", "
    '"-m", "http.server", "--bind", "127.0.0.1", "8080"]\nnamespaces = ["pid", "mount", '
    '"net"]\nready = { tcp = "127.0.0.1:8080" }\nEOF\nnsup run app.toml                      '
    "        # Ctrl-C stops it gracefully": app_toml,
}

FOUND = collect()


def test_every_example_is_listed():
    """A new example in the docs must be given a check here (or a reason it cannot run)."""
    assert sorted(FOUND) == sorted(EXAMPLES)


@pytest.mark.parametrize(
    "example", [e for e in EXAMPLES if e in FOUND], ids=lambda e: FOUND.get(e, "missing")
)
def test_example(example, live, tmp_path):
    check = EXAMPLES[example]
    if isinstance(check, str):
        pytest.skip(check)
    check(example, live=live, tmp_path=tmp_path)
