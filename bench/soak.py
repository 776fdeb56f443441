"""Soak: a crash-looping service restarted N times with zero backoff under ``nsup run``.

Prints the restart rate, and nsup's RSS and descriptor count near the start
and at the end (both must stay flat: nothing may grow per restart), then
sends SIGTERM and reports how long nsup took to exit and with which code.
Not a test: it always exits 0 once it has run (1 if nsup did not stop).

    .venv/bin/python bench/soak.py                      # 100,000 restarts
    .venv/bin/python bench/soak.py --restarts 5000      # a quick look
    .venv/bin/python bench/soak.py --namespaces default # with pid,mount,uts,ipc and init
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WARM_UP = 200  # restarts before the first sample (the zygote, caches, first allocations)


def policy(namespaces: str) -> str:
    ns = "" if namespaces == "default" else "namespaces = []\ninit = false\n"
    return (
        "[supervisor]\nmax_restarts = 1000000000\nwithin = 1\n\n"
        '[services.crash]\ncommand = ["false"]\nrestart = "always"\n'
        'backoff = { initial = 0, max = "1ms", jitter = 0 }\n' + ns
    )


def sample(pid: int) -> tuple[int, int]:
    """nsup's resident set (KiB) and open descriptors."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def restarts(control: str) -> int:
    out = subprocess.run(
        [sys.executable, "-m", "nsup", "status", "--json", "--control", control],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    ).stdout
    if not out:
        return -1
    data = json.loads(out)
    services = data.get("services", data) if isinstance(data, dict) else data
    if isinstance(services, dict):
        services = list(services.values())
    return sum(s.get("restarts", 0) for s in services)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--restarts", type=int, default=100_000)
    parser.add_argument("--namespaces", choices=("none", "default"), default="none")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "soak.toml")
        path.write_text(policy(args.namespaces))
        control = str(Path(tmp, "control.sock"))
        proc = subprocess.Popen(
            [sys.executable, "-m", "nsup", "run", str(path), "--control", control],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            while restarts(control) < WARM_UP:
                if proc.poll() is not None:
                    print(f"nsup run exited with {proc.returncode}", file=sys.stderr)
                    return 1
                time.sleep(0.2)
            first_n, first_t = restarts(control), time.monotonic()
            rss0, fds0 = sample(proc.pid)
            n = first_n
            while n < args.restarts:
                time.sleep(1.0)
                n = restarts(control)
                print(f"  {n} restarts", file=sys.stderr, flush=True)
            elapsed = time.monotonic() - first_t
            rss1, fds1 = sample(proc.pid)
            stop_t = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                code = None
            stopped = time.monotonic() - stop_t
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    rate = (n - first_n) / elapsed if elapsed else 0.0
    lines = [
        f"namespaces: {args.namespaces}; restarts: {n} ({n - first_n} measured)",
        f"restarts/s: {rate:.0f}",
        f"nsup RSS: {rss0} KiB at restart {first_n}, {rss1} KiB at restart {n}",
        f"nsup fds: {fds0} at restart {first_n}, {fds1} at restart {n}",
        f"SIGTERM: exit {code} after {stopped:.3f}s"
        if code is not None
        else "SIGTERM: nsup did NOT stop within 30s",
    ]
    print("\n".join(lines))
    return 0 if code is not None else 1


if __name__ == "__main__":
    sys.exit(main())
