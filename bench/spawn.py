# no copyright headers in this project (every nsup/ file trips it too)
"""Spawn latency and init memory of nsup, side by side with unshare, bwrap and subprocess.

Run as root from the repository (the venv's Python has nsup installed)::

    .venv/bin/python bench/spawn.py [--n 300] [--json]

Latency: every method spawns ``/bin/true`` and waits until it is reaped.  The
samples are interleaved round-robin (the starting method rotates each round),
so machine noise lands on every row alike.  All nsup API samples share one
``trio.run``; the command-line tools are run with a blocking
``subprocess.run`` from the same loop.

Memory: 20 children ``sleep 60`` are started through the API with nsup's init
as PID 1, and the init's PSS is read from ``/proc/<pid>/smaps_rollup``; tini
(if installed) is measured the same way for scale.

The targets (bench/README.md, "The targets") are printed with PASS/MISS: a
benchmark verdict, not an assertion.  The exit code is 0 whatever the verdict.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

import nsup

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

BASE_NS = frozenset({"pid", "mount", "uts", "ipc"})
NET_NS = BASE_NS | {"net"}
TRUE = "/bin/true"
CMD_TIMEOUT = 10.0  # seconds; any single spawn taking longer is a failure
SPAWN_TARGET = 1.5  # nsup API within 1.5x of unshare
PSS_TARGET_MB = 2.0
WARMUP = 3  # unrecorded samples per method (the first nsup spawn starts the zygote)
FAILURES = (nsup.NsupError, OSError, RuntimeError, subprocess.SubprocessError, trio.TooSlowError)


@dataclass
class Method:
    """One row of the latency table."""

    name: str
    namespaces: str  # shown in the table; rows with equal strings are compared
    sample: Callable[[], Awaitable[None]]  # one spawn-to-reaped; raises on failure
    ref: str | None = None  # name of the unshare row this one is compared with
    samples_ns: list[int] = field(default_factory=list)
    error: str | None = None  # set when the method is unavailable or failed


# ---------------------------------------------------------------- samplers


def api_sampler(namespaces: frozenset[str], *, init: bool = True) -> Callable[[], Awaitable[None]]:
    """Return a sampler that spawns /bin/true through ``nsup.spawn`` and waits for it."""
    spec = nsup.ProcessSpec(argv=[TRUE], namespaces=namespaces, init=init)

    async def sample() -> None:
        with trio.fail_after(CMD_TIMEOUT):
            async with nsup.spawn(spec) as proc:
                status = await proc.wait()
        if status.code != 0:
            raise RuntimeError(f"/bin/true ended with {status}")

    return sample


def cmd_sampler(argv: list[str]) -> Callable[[], Awaitable[None]]:
    """Return a sampler that runs *argv* with a blocking ``subprocess.run``.

    Blocking inside trio is deliberate: it adds no scheduling of its own, and
    ``subprocess.run`` kills and reaps the child on a timeout or Ctrl-C.
    """

    async def sample() -> None:
        result = subprocess.run(  # noqa: ASYNC221 - blocking on purpose, see above
            argv, check=False, timeout=CMD_TIMEOUT, stdin=subprocess.DEVNULL
        )
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited with {result.returncode}")

    return sample


def probe_cmd(argv: list[str]) -> str | None:
    """Run *argv* once; return None if it works, else why it does not."""
    try:
        result = subprocess.run(
            argv, check=False, timeout=CMD_TIMEOUT, stdin=subprocess.DEVNULL, capture_output=True
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{type(exc).__name__}: {exc}"
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).decode(errors="replace").strip().splitlines()
        last = lines[-1] if lines else ""
        return f"exit {result.returncode}: {last[:160]}"
    return None


def nsup_cli() -> str:
    """The ``nsup`` console script next to this interpreter."""
    return str(Path(sys.executable).parent / "nsup")


def build_methods() -> tuple[list[Method], list[str]]:
    """Return the latency rows and notes about rows that were skipped."""
    unshare = ["unshare", "--fork", "--pid", "--mount-proc", "--uts", "--ipc", "--mount"]
    base = "pid,mount,uts,ipc"
    net = "pid,mount,uts,ipc,net"
    methods = [
        Method("nsup API", base, api_sampler(BASE_NS), ref="unshare"),
        Method("nsup API init=False", base, api_sampler(BASE_NS, init=False), ref="unshare"),
        Method("nsup API +net", net, api_sampler(NET_NS), ref="unshare --net"),
        Method(
            "nsup exec (CLI)",
            base,
            cmd_sampler([nsup_cli(), "exec", "--ns", base, "--", TRUE]),
            ref="unshare",
        ),
        Method("unshare", base, cmd_sampler([*unshare, TRUE]), ref="unshare"),
        Method("unshare --net", net, cmd_sampler([*unshare, "--net", TRUE]), ref="unshare --net"),
    ]
    notes: list[str] = []
    bwrap = shutil.which("bwrap")
    if bwrap:
        argv = [bwrap, "--unshare-pid", "--unshare-uts", "--unshare-ipc"]
        argv += ["--dev-bind", "/", "/", TRUE]
        methods.append(Method("bwrap", base, cmd_sampler(argv), ref="unshare"))
    else:
        notes.append("bwrap: not installed (apt-get install bubblewrap); row skipped")
    methods.append(Method("subprocess.run (floor)", "none", cmd_sampler([TRUE]), ref="unshare"))
    return methods, notes


# ---------------------------------------------------------------- latency


async def measure_latency(methods: list[Method], n: int) -> None:
    """Warm up every method, then take *n* interleaved samples of each."""
    for method in methods:
        try:
            for _ in range(WARMUP):
                await method.sample()
        except FAILURES as exc:
            method.error = f"unavailable: {type(exc).__name__}: {exc}"
    live = [m for m in methods if m.error is None]
    for i in range(n):
        k = i % len(live) if live else 0
        for method in live[k:] + live[:k]:
            if method.error is not None:
                continue
            start = time.perf_counter_ns()
            try:
                await method.sample()
            except FAILURES as exc:
                method.error = f"failed at sample {i}: {type(exc).__name__}: {exc}"
                continue
            method.samples_ns.append(time.perf_counter_ns() - start)


def summarize(methods: list[Method]) -> list[dict[str, Any]]:
    """Median, p90, children/s and the ratio to the matching unshare row, per method."""
    medians = {
        m.name: statistics.median(m.samples_ns) / 1e6
        for m in methods
        if m.samples_ns and m.error is None
    }
    rows = []
    for m in methods:
        row: dict[str, Any] = {
            "method": m.name,
            "namespaces": m.namespaces,
            "samples": len(m.samples_ns),
        }
        if m.error is not None or not m.samples_ns:
            row["error"] = m.error or "no samples"
            rows.append(row)
            continue
        ms = sorted(s / 1e6 for s in m.samples_ns)
        median = medians[m.name]
        p90 = statistics.quantiles(ms, n=10, method="inclusive")[8] if len(ms) > 1 else ms[0]
        ref_median = medians.get(m.ref) if m.ref else None
        row |= {
            "median_ms": round(median, 3),
            "p90_ms": round(p90, 3),
            "children_per_s": round(1000 / statistics.fmean(ms), 1),
            "vs": m.ref,
            "ratio": round(median / ref_median, 2) if ref_median else None,
        }
        rows.append(row)
    return rows


# ---------------------------------------------------------------- memory


def memory_kb(pid: int) -> tuple[int, int]:
    """(PSS, USS) of *pid* in kB, from ``/proc/<pid>/smaps_rollup``.

    PSS splits shared pages among their sharers; USS (Private_Clean +
    Private_Dirty) is what the process alone holds, the floor of its cost.
    """
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, value = line.partition(":")
        fields[name] = int(value.split()[0])
    return fields["Pss"], fields["Private_Clean"] + fields["Private_Dirty"]


async def measure_nsup_init_pss(count: int) -> list[tuple[int, int]]:
    """Start *count* ``sleep 60`` under nsup's init; return each init's (PSS, USS) in kB.

    Every child lives inside the ``AsyncExitStack``: leaving it (normally, on
    an error or on Ctrl-C) stops and reaps them all.
    """
    spec = nsup.ProcessSpec(argv=["sleep", "60"], namespaces=BASE_NS, init=True)
    async with contextlib.AsyncExitStack() as stack:
        procs = [await stack.enter_async_context(nsup.spawn(spec)) for _ in range(count)]
        await trio.sleep(0.2)  # let every init settle into its wait loop
        return [memory_kb(p.pid) for p in procs]


def children(pid: int) -> list[int]:
    """The pids of *pid*'s children, from every thread's ``children`` list in /proc."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += map(int, (task / "children").read_text().split())
    return found


def stray_children(argv: list[str], known: set[int]) -> list[int]:
    """Our own children running *argv* that no Popen object holds.

    A Ctrl-C that lands inside ``subprocess.Popen`` after the fork loses the
    Popen object but not the child; it is still ours (unreaped), so its pid is
    safe to signal and reap.
    """
    found = []
    for pid in children(os.getpid()):
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
            if pid not in known and [a.decode() for a in cmdline] == argv:
                found.append(pid)
    return found


def kill_children(parent: int) -> None:
    """SIGKILL every child of *parent* through a pidfd, checked after it is opened."""
    for pid in children(parent):
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            continue  # gone already
        try:
            if pid in children(parent):  # the pidfd pins it: still parent's child, not a reuse
                signal.pidfd_send_signal(fd, signal.SIGKILL)
        except ProcessLookupError:
            pass
        finally:
            os.close(fd)


def reap_nohang(pid: int) -> int | None:
    """``waitpid(pid, WNOHANG)`` on our own child: its wait status, or None while it runs."""
    done, status = os.waitpid(pid, os.WNOHANG)
    return status if done else None


def end_unshares(procs: list[subprocess.Popen[bytes]], argv: list[str]) -> None:
    """Stop and reap every ``unshare --fork --pid`` we started, and their namespaces.

    unshare ignores SIGTERM and SIGINT while it waits, and killing it early
    can beat its child's ``PR_SET_PDEATHSIG``; so kill its child instead (PID
    1 of the namespace: everything inside dies with it) until unshare, having
    reaped it, exits.  Repeated because unshare may not have forked yet.
    """
    pending: dict[int, Callable[[], int | None]] = {p.pid: p.poll for p in procs}
    known = set(pending)
    start = time.monotonic()
    # A stray may still be between fork and exec: look again for a while.
    while pending or time.monotonic() - start < 0.05:
        for pid in stray_children(argv, known):
            known.add(pid)
            pending[pid] = functools.partial(reap_nohang, pid)
        for pid, finished in list(pending.items()):
            if finished() is None:
                kill_children(pid)
            else:
                del pending[pid]
        if pending and time.monotonic() - start > CMD_TIMEOUT:
            raise RuntimeError(f"unshare {sorted(pending)} did not exit; kill them by pid")
        time.sleep(0.002)


def tini_pid(unshare_pid: int, deadline: float) -> int:
    """Wait until unshare's child has exec'd tini and started sleep; return tini's pid."""
    tini_exe = os.path.realpath(shutil.which("tini") or "tini")
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            kids = children(unshare_pid)
            if kids:
                pid = kids[0]
                started = bool(children(pid))
                if started and str(Path(f"/proc/{pid}/exe").readlink()) == tini_exe:
                    return pid
        time.sleep(0.005)  # a benchmark set-up step, not nsup's hot path
    raise RuntimeError("tini did not start in time")


def measure_tini_pss(count: int) -> list[tuple[int, int]]:
    """Start *count* ``unshare --fork --pid tini -s -- sleep 60``; return each tini's (PSS, USS).

    Every unshare, and so every namespace, is ended in the ``finally`` (see
    ``end_unshares``).  unshare's stderr is dropped: it complains when its
    child dies by a signal.
    """
    argv = ["unshare", "--fork", "--pid", "tini", "-s", "--", "sleep", "60"]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        null = subprocess.DEVNULL
        procs.extend(subprocess.Popen(argv, stdin=null, stderr=null) for _ in range(count))
        deadline = time.monotonic() + CMD_TIMEOUT
        pids = [tini_pid(p.pid, deadline) for p in procs]
        time.sleep(0.2)
        return [memory_kb(pid) for pid in pids]
    finally:
        end_unshares(procs, argv)


def pss_summary(values_kb: list[tuple[int, int]]) -> dict[str, Any]:
    """Median and max PSS, and median USS, in MB."""
    pss = [v[0] for v in values_kb]
    return {
        "count": len(values_kb),
        "median_mb": round(statistics.median(pss) / 1024, 2),
        "max_mb": round(max(pss) / 1024, 2),
        "uss_median_mb": round(statistics.median(v[1] for v in values_kb) / 1024, 2),
    }


# ---------------------------------------------------------------- report


def verdict(ok: bool | None) -> str:
    """PASS, MISS, or n/a when it could not be measured."""
    return "n/a" if ok is None else ("PASS" if ok else "MISS")


def print_report(result: dict[str, Any]) -> None:
    """Print the tables for a human."""
    print(
        f"spawn of {TRUE} to reaped: {result['n']} samples per method, interleaved round-robin "
        f"({result['machine']})"
    )
    header = f"{'method':<24} {'namespaces':<22} {'median ms':>9} {'p90 ms':>8} "
    header += f"{'children/s':>10}  ratio"
    print(header)
    print("-" * len(header) + "-" * 16)
    for row in result["rows"]:
        if "error" in row:
            print(f"{row['method']:<24} {row['namespaces']:<22} {row['error']}")
            continue
        ratio = f"{row['ratio']:.2f}x vs {row['vs']}" if row["ratio"] is not None else "-"
        print(
            f"{row['method']:<24} {row['namespaces']:<22} {row['median_ms']:>9.3f} "
            f"{row['p90_ms']:>8.3f} {row['children_per_s']:>10.1f}  {ratio}"
        )
    for note in result["notes"]:
        print(f"note: {note}")
    spawn = result["spawn_target"]
    print(f"\ntarget: nsup API within {SPAWN_TARGET}x of unshare (pid,mount,uts,ipc): ", end="")
    ratio = spawn["ratio"]
    print(f"{ratio}x  {spawn['verdict']}" if ratio is not None else spawn["verdict"])

    mem = result["memory"]
    print(f"\nPSS per PID-1 init ({mem['children']} children 'sleep 60', read from smaps_rollup):")
    for name in ("nsup init", "tini"):
        entry = mem[name]
        if "error" in entry:
            print(f"  {name:<10} {entry['error']}")
        else:
            print(
                f"  {name:<10} PSS median {entry['median_mb']:.2f} MB, max {entry['max_mb']:.2f} MB"
                f"  (USS median {entry['uss_median_mb']:.2f} MB)"
            )
    print(f"target: nsup init under {PSS_TARGET_MB:g} MB PSS per child: {mem['verdict']}")


async def run(n: int, mem_children: int) -> dict[str, Any]:
    """Run every benchmark; return the results as one dict."""
    methods, notes = build_methods()
    cli = next(m for m in methods if m.name == "nsup exec (CLI)")
    why = probe_cmd([nsup_cli(), "exec", "--ns", "pid,mount,uts,ipc", "--", TRUE])
    if why is not None:
        cli.error = f"unavailable ({why})"
    await measure_latency([m for m in methods if m.error is None], n)
    rows = summarize(methods)
    by_name = {row["method"]: row for row in rows}
    api_ratio = by_name["nsup API"].get("ratio")
    spawn_target = {
        "target": f"nsup API within {SPAWN_TARGET}x of unshare (pid,mount,uts,ipc)",
        "ratio": api_ratio,
        "verdict": verdict(None if api_ratio is None else api_ratio <= SPAWN_TARGET),
    }

    memory: dict[str, Any] = {"children": mem_children}
    try:
        memory["nsup init"] = pss_summary(await measure_nsup_init_pss(mem_children))
    except (nsup.NsupError, OSError, RuntimeError) as exc:
        memory["nsup init"] = {"error": f"failed: {type(exc).__name__}: {exc}"}
    if shutil.which("tini"):
        try:
            memory["tini"] = pss_summary(measure_tini_pss(mem_children))
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            memory["tini"] = {"error": f"failed: {type(exc).__name__}: {exc}"}
    else:
        memory["tini"] = {"error": "not installed (apt-get install tini); skipped"}
    init_mb = memory["nsup init"].get("median_mb")
    memory["target"] = f"nsup init under {PSS_TARGET_MB:g} MB PSS per child"
    memory["verdict"] = verdict(None if init_mb is None else init_mb < PSS_TARGET_MB)

    return {
        "n": n,
        "machine": f"{platform.node()}, Linux {platform.release()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}",
        "rows": rows,
        "notes": notes,
        "spawn_target": spawn_target,
        "memory": memory,
    }


def main() -> int:
    """Parse the arguments, run, print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=300, help="samples per method (default 300)")
    parser.add_argument("--mem-children", type=int, default=20, help="children for the PSS test")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/spawn.py: run as root (unshare and namespaces need it)", file=sys.stderr)
        return 2
    if args.n < 1 or args.mem_children < 1:
        parser.error("--n and --mem-children must be at least 1")
    result = trio.run(run, args.n, args.mem_children)
    if args.json:
        print(json.dumps(result))
    else:
        print_report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
