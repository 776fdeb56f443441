# no copyright headers in this project
"""Every figure of issue 12 ("Fast paths") in one table, with its reference measured in the same run.

Run as root from the repository, with the venv's Python::

    .venv/bin/python bench/run.py                      # about 3 minutes on 2 idle cores
    .venv/bin/python bench/run.py --big 10000          # and 10,000 services up and down
    .venv/bin/python bench/run.py --write              # also write bench/RESULTS.md (+ plot)

Sections (each reuses the measuring code of ``spawn.py`` and ``restart.py``):

1. Command line: ``nsup exec -- /bin/true``, ``nsup --help``, ``--version``,
   ``check``, ``status`` (against an ``nsup run`` this bench starts), and
   the references ``unshare``, ``bwrap`` (when installed), ``python3 -I -S
   -c pass``, the venv's ``python -c pass`` and ``supervisorctl status``
   (when installed): wall time of each command, samples interleaved
   round-robin so load on the machine lands on every row alike.
2. Spawn through the API against ``unshare``, and the init's PSS and USS
   with 20 children (``spawn.py``).
3. Restart, exit to next exec, backoff 0, with ``namespaces = []`` and the
   default, beside a shell ``while`` loop (``restart.py``, kernel process
   events).
4. Scale: 1,000 ``sleep infinity`` from launch to all ready, and with
   ``--big N`` N services up and down (``restart.py``).

Not a test: it prints PASS/MISS beside each target and exits 0 once run.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).parent))
import restart
import spawn

HERE = Path(__file__).parent
REPO = HERE.parent
NSUP = str(Path(sys.executable).parent / "nsup")
TRUE = "/bin/true"
PYTHON = os.path.realpath(sys.executable)  # the interpreter itself, not a venv link or a shim
STATUS_POLICY = """\
[supervisor]
control = "bench.sock"

[services.a]
command = ["sleep", "infinity"]
namespaces = []

[services.b]
command = ["sleep", "infinity"]
"""


# ---------------------------------------------------------------- 1. the command line


def _status_request(path: str) -> None:
    """The same request ``nsup status`` sends, straight to the socket, answer read."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(path)
        sock.sendall(b'{"v": 1, "cmd": "status", "names": []}\n')
        sock.makefile("rb").readline()


# `nsup` without the venv's site start-up (its .pth files, setuptools' distutils shim among
# them): what nsup itself adds to `python3 -I -S`.
NO_SITE = [
    PYTHON,
    "-I",
    "-S",
    "-c",
    (
        f"import sys; sys.path[:0] = [{str(REPO)!r}, {sysconfig.get_paths()['purelib']!r}]; "
        "from nsup._cli import main; sys.exit(main(sys.argv[1:]))"
    ),
]


def cli_commands(control: str, supervisorctl_conf: Path | None) -> dict[str, list[str] | Any]:
    """Name -> argv (or a callable for in-process rows) of every command-line row."""
    rows: dict[str, Any] = {
        "nsup exec -- /bin/true": [NSUP, "exec", "--", TRUE],
        "nsup exec -- /bin/true, no site": [*NO_SITE, "exec", "--", TRUE],
        "nsup status, no site": [*NO_SITE, "status", "--control", control],
        "nsup check, no site": [*NO_SITE, "check", str(REPO / "examples/web-and-db.toml")],
        "unshare --fork --pid --mount-proc --uts --ipc": [
            "unshare", "--fork", "--pid", "--mount-proc", "--uts", "--ipc", "--mount", TRUE,
        ],
        "python3 -I -S -c pass": [PYTHON, "-I", "-S", "-c", "pass"],
        "nsup --help": [NSUP, "--help"],
        "nsup --version": [NSUP, "--version"],
        "nsup check examples/web-and-db.toml": [NSUP, "check", str(REPO / "examples/web-and-db.toml")],
        "nsup status": [NSUP, "status", "--control", control],
        "venv python -c pass": [sys.executable, "-c", "pass"],
        "status request straight to the socket": lambda: _status_request(control),
    }  # fmt: skip
    if shutil.which("bwrap"):
        rows["bwrap --unshare-pid,uts,ipc"] = [
            "bwrap", "--unshare-pid", "--unshare-uts", "--unshare-ipc", "--dev-bind", "/", "/",
            "--proc", "/proc", TRUE,
        ]  # fmt: skip
    if supervisorctl_conf is not None:
        rows["supervisorctl status"] = ["supervisorctl", "-c", str(supervisorctl_conf), "status"]
    return rows


def time_commands(rows: dict[str, Any], n: int) -> dict[str, dict[str, Any]]:
    """Median and p90 wall time per row, samples interleaved round-robin."""
    samples: dict[str, list[float]] = {name: [] for name in rows}
    errors: dict[str, str] = {}
    names = list(rows)
    for i in range(n + 2):  # two unrecorded warm-up rounds
        for name in names[i % len(names) :] + names[: i % len(names)]:
            if name in errors:
                continue
            what = rows[name]
            t0 = time.perf_counter()
            try:
                if callable(what):
                    what()
                else:
                    subprocess.run(
                        what,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE,
                        check=True,
                        timeout=30,
                    )
            except (OSError, subprocess.SubprocessError) as exc:
                errors[name] = f"{type(exc).__name__}: {exc}"
                continue
            if i >= 2:
                samples[name].append((time.perf_counter() - t0) * 1000)
    result = {}
    for name in names:
        if name in errors or not samples[name]:
            result[name] = {"error": errors.get(name, "no samples")}
            continue
        ms = sorted(samples[name])
        p90 = statistics.quantiles(ms, n=10, method="inclusive")[8] if len(ms) > 1 else ms[0]
        result[name] = {"median_ms": round(statistics.median(ms), 2), "p90_ms": round(p90, 2)}
    return result


def _wait_for(path: Path, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():  # no event for "a socket appeared": poll with a deadline
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"nsup run did not create {path}")
        time.sleep(0.02)


def _supervisord(work: Path) -> tuple[subprocess.Popen[bytes] | None, Path | None]:
    """Start supervisord with two services for the supervisorctl row, when installed."""
    if not (shutil.which("supervisord") and shutil.which("supervisorctl")):
        return None, None
    conf = work / "supervisord.conf"
    conf.write_text(
        f"[supervisord]\nnodaemon=true\nlogfile={work}/sd.log\npidfile={work}/sd.pid\n"
        f"[unix_http_server]\nfile={work}/sd.sock\n"
        "[rpcinterface:supervisor]\n"
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n"
        f"[supervisorctl]\nserverurl=unix://{work}/sd.sock\n"
        "[program:a]\ncommand=sleep infinity\n[program:b]\ncommand=sleep infinity\n"
    )
    proc = subprocess.Popen(
        ["supervisord", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _wait_for(work / "sd.sock", proc, 20)
    return proc, conf


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def measure_cli(n: int) -> dict[str, dict[str, Any]]:
    """Section 1: start an ``nsup run`` (and supervisord when installed), time every command."""
    work = Path(tempfile.mkdtemp(prefix="nsup-bench-cli-"))
    policy = work / "bench.toml"
    policy.write_text(STATUS_POLICY)
    run = subprocess.Popen(
        [NSUP, "run", str(policy)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    supervisord = None
    try:
        _wait_for(work / "bench.sock", run, 30)
        supervisord, conf = _supervisord(work)
        return time_commands(cli_commands(str(work / "bench.sock"), conf), n)
    finally:
        _stop(run)
        _stop(supervisord)
        shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------- 2-4. spawn, memory, restart, scale


def measure_engine(args: argparse.Namespace) -> dict[str, Any]:
    """Sections 2 to 4, through spawn.py's and restart.py's own measuring code."""
    result: dict[str, Any] = {"spawn": trio.run(spawn.run, args.spawn_n, 20)}
    tools = restart.find_tools(install=False)
    procs = restart.Processes()
    root = Path(tempfile.mkdtemp(prefix="nsup-bench-engine-"))
    soft, hard = restart.resource.getrlimit(restart.resource.RLIMIT_NOFILE)
    restart.resource.setrlimit(restart.resource.RLIMIT_NOFILE, (hard, hard))
    notes: list[str] = []
    try:
        result["restart"] = restart.section(
            "restart", lambda: restart.measure_restart(procs, tools, root, args.restart_n), notes
        )
        result["scale"] = restart.section(
            "scale", lambda: restart.measure_scale(procs, tools, root, 1000), notes
        )
        if args.big:
            result["big"] = restart.section(
                "big",
                lambda: restart.measure_scale(
                    procs, tools, root, args.big, kinds=[restart.NSUP_BIG], up_timeout=180
                ),
                notes,
            )
    finally:
        procs.sweep()
        restart.resource.setrlimit(restart.resource.RLIMIT_NOFILE, (soft, hard))
        shutil.rmtree(root, ignore_errors=True)
    result["notes"] = notes
    return result


# ---------------------------------------------------------------- the table


def _ms(row: dict[str, Any] | None, key: str = "median_ms") -> float | None:
    return None if row is None or key not in row else row[key]


def _verdict(value: float | None, limit: float) -> str:
    return "n/a" if value is None else ("PASS" if value <= limit else "MISS")


def _show(value: float | None, unit: str = "ms") -> str:
    return "n/a" if value is None else f"{value:g} {unit}"


def table(cli: dict[str, Any], engine: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """Rows: (figure, nsup, reference, target, verdict)."""
    py = _ms(cli.get("python3 -I -S -c pass"))
    venv = _ms(cli.get("venv python -c pass"))
    refs_exec = "; ".join(
        f"{name} {_show(_ms(cli.get(name)))}"
        for name in (
            "unshare --fork --pid --mount-proc --uts --ipc",
            "bwrap --unshare-pid,uts,ipc",
            "python3 -I -S -c pass",
        )
        if name in cli
    )
    rows = []
    exec_ms = _ms(cli.get("nsup exec -- /bin/true"))
    ratio = f" ({exec_ms / py:.1f}x python3 -I -S)" if exec_ms and py else ""
    bare = _ms(cli.get("nsup exec -- /bin/true, no site"))
    if bare and py:
        ratio += f"; without the venv's site {bare:g} ms ({bare / py:.1f}x)"
    rows.append(
        (
            "`nsup exec -- /bin/true` (default namespaces)",
            _show(exec_ms) + ratio,
            refs_exec,
            "<= 40 ms",
            _verdict(exec_ms, 40),
        )
    )
    for name in (
        "nsup --help",
        "nsup --version",
        "nsup check examples/web-and-db.toml",
        "nsup status",
    ):
        value = _ms(cli.get(name))
        ref = f"venv `python -c pass` {_show(venv)}"
        if name == "nsup status":
            ref += f"; `supervisorctl status` {_show(_ms(cli.get('supervisorctl status')))}"
            ref += f"; request straight to the socket {_show(_ms(cli.get('status request straight to the socket')))}"
        ratio = f" ({value / py:.1f}x python3 -I -S)" if value and py else ""
        bare = _ms(cli.get(f"{name.split(' examples')[0]}, no site"))
        if bare and py:
            ratio += f"; without the venv's site {bare:g} ms ({bare / py:.1f}x)"
        rows.append((f"`{name}`", _show(value) + ratio, ref, "<= 60 ms", _verdict(value, 60)))
    spawn_rows = {r["method"]: r for r in engine["spawn"]["rows"]}
    api = spawn_rows.get("nsup API", {})
    unshare = spawn_rows.get("unshare", {})
    api_ratio = api.get("ratio")
    rows.append(
        (
            "spawn through the API (default namespaces)",
            f"{_show(_ms(api))} ({api_ratio}x unshare)" if api_ratio else _show(_ms(api)),
            f"`unshare` {_show(_ms(unshare))}",
            "<= 1.05x unshare",
            _verdict(api_ratio, 1.05),
        )
    )
    mem = engine["spawn"]["memory"]
    init = mem.get("nsup init", {})
    tini = mem.get("tini", {})
    rows.append(
        (
            f"init memory per child ({mem['children']} children)",
            f"PSS {_show(init.get('median_mb'), 'MB')}, USS {_show(init.get('uss_median_mb'), 'MB')}",
            f"tini PSS {_show(tini.get('median_mb'), 'MB')}",
            "PSS <= 1.0 MB, USS <= 0.5 MB",
            "n/a"
            if "median_mb" not in init
            else ("PASS" if init["median_mb"] <= 1.0 and init["uss_median_mb"] <= 0.5 else "MISS"),
        )
    )
    restarts = {(r["supervisor"], r["namespaces"]): r for r in engine.get("restart", [])}
    floor = next((r for r in engine.get("restart", []) if "floor" in r["supervisor"]), None)
    for ns, limit in (("[]", 2.5), ("default", 4.0)):
        row = restarts.get(("nsup run", ns))
        rows.append(
            (
                f"restart, exit to next exec, backoff 0, `namespaces = {ns}`",
                _show(_ms(row))
                if row and "error" not in row
                else f"error: {row and row.get('error')}",
                f"shell `while` loop {_show(_ms(floor))}",
                f"<= {limit:g} ms",
                _verdict(_ms(row), limit),
            )
        )
    for key, label, limit in (
        ("scale", "1,000", 1.0),
        ("big", f"{engine.get('big_n', 0):,}", None),
    ):
        for row in engine.get(key, []):
            if row.get("supervisor") != "nsup run":
                continue
            if "error" in row:
                shown = f"error: {row['error'].partition('; stderr')[0]}"
                up = None
            else:
                up = row.get("up_s")
                shown = (
                    f"up {up} s, stop {row.get('stop_s')} s, peak RSS {row.get('peak_rss_mb')} MB, "
                    f"exit {row.get('exit_code')}, left {row.get('left_behind')}"
                )
            rows.append(
                (
                    f"{label} services `sleep infinity`, `namespaces = {row['namespaces']}`",
                    shown,
                    "",
                    f"up <= {limit:g} s" if limit else "up, ready and down cleanly",
                    _verdict(up, limit)
                    if limit
                    else (
                        "PASS"
                        if up is not None
                        and row.get("left_behind") == 0
                        and row.get("exit_code") == 0
                        else "MISS"
                    ),
                )
            )
    return rows


def markdown(rows: list[tuple[str, ...]]) -> str:
    """The table as Markdown."""
    lines = ["| figure | nsup | reference, same run | target | verdict |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def plot(cli: dict[str, Any], engine: dict[str, Any], path: Path) -> str | None:
    """Draw spawn and restart latency per method (median, bar to p90); None if matplotlib is absent."""
    try:
        import matplotlib as mpl  # noqa: PLC0415 - the optional `bench` extra

        mpl.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
        from matplotlib import ticker  # noqa: PLC0415
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]'): no plot"
    spawn_rows = [
        (r["method"], r["median_ms"], r["p90_ms"])
        for r in engine["spawn"]["rows"]
        if "median_ms" in r
    ]
    spawn_rows += [
        (name, row["median_ms"], row["p90_ms"])
        for name, row in cli.items()
        if "median_ms" in row and name in ("nsup exec -- /bin/true", "bwrap --unshare-pid,uts,ipc")
    ]
    restart_rows = [
        (f"{r['supervisor']} {r['namespaces']}".strip(), r["median_ms"], r["p90_ms"])
        for r in engine.get("restart", [])
        if "median_ms" in r
    ]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    for ax, rows, title in (
        (axes[0], spawn_rows, "spawn of /bin/true to reaped"),
        (axes[1], restart_rows, "restart: exit to next exec, backoff 0"),
    ):
        names = [r[0] for r in rows]
        medians = [r[1] for r in rows]
        spread = [max(r[2] - r[1], 0) for r in rows]
        ax.barh(names, medians, xerr=[[0] * len(rows), spread], color="#4c72b0")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel("ms (median; line to p90), log scale")
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return None


def main() -> int:
    """Parse the arguments, run every section, print (and write) the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=30, help="samples per command-line row (30)")
    parser.add_argument("--spawn-n", type=int, default=100, help="samples per spawn row (100)")
    parser.add_argument("--restart-n", type=int, default=40, help="restarts per row (40)")
    parser.add_argument("--big", type=int, default=0, help="also N services up and down (0: skip)")
    parser.add_argument("--write", action="store_true", help="write bench/RESULTS.md and the plot")
    parser.add_argument("--json", action="store_true", help="print the raw results as JSON too")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/run.py: run as root (namespaces and process events need it)", file=sys.stderr)
        return 2
    started = time.monotonic()
    load_at_start = os.getloadavg()[0]  # at the end it counts the bench's own 10,000 services
    # An installed package has its bytecode compiled (pip does it); a checkout run with
    # PYTHONDONTWRITEBYTECODE=1 would otherwise compile nsup from source on every command.
    compileall.compile_dir(REPO / "nsup", quiet=1)
    print("bench/run.py: command line ...", file=sys.stderr)
    cli = measure_cli(args.n)
    print("bench/run.py: spawn, memory, restart, scale ...", file=sys.stderr)
    engine = measure_engine(args)
    engine["big_n"] = args.big
    rows = table(cli, engine)
    text = markdown(rows)
    machine = (
        f"{platform.node()}, Linux {platform.release()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, load average {load_at_start:.1f} at the start "
        f"({os.getloadavg()[0]:.1f} at the end, with the bench's own processes)"
    )
    notes = engine.get("notes", []) + engine["spawn"].get("notes", [])
    if load_at_start > (os.cpu_count() or 1) / 2:
        notes.append(
            f"the machine was busy (load average {load_at_start:.1f} on {os.cpu_count()} CPUs "
            "before the bench began): "
            "absolute times are inflated, most for the rows that start many processes; compare "
            "each row with its reference from the same run"
        )
    print(text)
    print(f"\n{machine}; {time.monotonic() - started:.0f} s")
    for note in notes:
        print(f"note: {note}")
    if args.json:
        print(json.dumps({"cli": cli, "engine": engine}, default=str))
    if args.write:
        why = plot(cli, engine, HERE / "results.png")
        command = "sudo .venv/bin/python bench/run.py --write" + (
            f" --big {args.big}" if args.big else ""
        )
        details = "\n".join(
            f"| {name} | {row.get('median_ms', row.get('error'))} | {row.get('p90_ms', '')} |"
            for name, row in cli.items()
        )
        (HERE / "RESULTS.md").write_text(
            "# Benchmark results\n\n"
            f"Produced by `{command}` on {machine}, "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.\n\n"
            + text
            + "\n\n## Command line, every row (ms)\n\n| command | median | p90 |\n|---|---|---|\n"
            + details
            + "\n\n"
            + (
                "![spawn and restart latency](results.png)\n"
                if why is None
                else f"No plot: {why}.\n"
            )
            + "".join(f"\n- {note}" for note in notes)
            + "\n"
        )
        print(f"wrote {HERE / 'RESULTS.md'}" + ("" if why else " and results.png"))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
