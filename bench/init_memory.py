"""Where an init's memory goes: PSS and USS at N children, and its private pages per mapping.

Starts N ``sleep 60`` under nsup's init through the API (default namespaces,
as ``spawn.py``), reads every init's ``/proc/PID/smaps_rollup`` and one
init's ``/proc/PID/smaps``, and prints the private pages (Private_Dirty +
Private_Clean) of each mapping.  ``--floor`` also runs the floor experiment:
a process that imports ``nsup._clone`` as the zygote does and freezes its
heap forks N children that only wait in ``sigwaitinfo``; their USS is what any
Python child of such a zygote costs before it does anything, with and without
a request decoded in the parent's loop.

Run as root from the repository: ``.venv/bin/python bench/init_memory.py [--n 20] [--floor]``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import re
import statistics
import subprocess
import sys
from pathlib import Path

import trio

import nsup
from nsup import _zygote_client

BASE_NS = ["pid", "mount", "uts", "ipc"]
_RANGE = re.compile(r"^[0-9a-f]+-[0-9a-f]+ ")


def rollup(pid: int) -> tuple[int, int]:
    """(PSS, USS) of *pid* in kB."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        fields[key] = int(value.split()[0])
    return fields["Pss"], fields["Private_Clean"] + fields["Private_Dirty"]


def private_per_mapping(pid: int) -> collections.Counter[str]:
    """Private kB per mapping of *pid*, named by file (or [anon], [heap], [stack])."""
    found: collections.Counter[str] = collections.Counter()
    name = ""
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        if _RANGE.match(line):
            parts = line.split(None, 5)
            path = parts[5] if len(parts) > 5 else "[anon]"
            name = f"{path.rsplit('/', 1)[-1]} {parts[1]}"
        elif line.startswith(("Private_Dirty:", "Private_Clean:")):
            found[name] += int(line.split()[1])
    return found


async def measure(n: int) -> None:
    spec = nsup.ProcessSpec(argv=["sleep", "60"], namespaces=BASE_NS, init=True)
    async with contextlib.AsyncExitStack() as stack:
        procs = [await stack.enter_async_context(nsup.spawn(spec)) for _ in range(n)]
        await trio.sleep(0.3)  # every init in its wait loop
        values = [rollup(p.pid) for p in procs]
        mappings = private_per_mapping(procs[len(procs) // 2].pid)
    pss = statistics.median(v[0] for v in values)
    uss = statistics.median(v[1] for v in values)
    print(
        f"nsup init, {n} children: PSS median {pss / 1024:.2f} MB, USS median {uss / 1024:.2f} MB"
    )
    print("private pages of one init, per mapping:")
    for name, kb in mappings.most_common():
        if kb:
            print(f"  {kb:6d} kB  {name}")


_FLOOR = """
import gc, marshal, os, signal, statistics, sys, time
from nsup._clone import child
mode, n = sys.argv[2], int(sys.argv[3])
REQ = marshal.dumps({"argv": ["sleep", "60"], "env": dict(os.environ), "mounts": [], "flags": 0})
signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
child.warm_up()
gc.collect(); gc.freeze()
r, w = os.pipe()
kids = []
for _ in range(n):
    if mode == "decode":
        req = marshal.loads(REQ)
    pid = os.fork()
    if pid == 0:
        gc.disable()
        os.write(w, b"x")
        signal.sigwaitinfo({signal.SIGTERM})
        os._exit(0)
    os.read(r, 1)
    kids.append(pid)
time.sleep(0.3)
uss = []
for pid in kids:
    f = dict(l.split(":", 1) for l in open(f"/proc/{pid}/smaps_rollup").read().splitlines()[1:])
    uss.append(int(f["Private_Dirty"].split()[0]) + int(f["Private_Clean"].split()[0]))
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
print(statistics.median(uss))
"""


def floor(n: int) -> None:
    package = str(Path(_zygote_client.__file__).parent)
    for mode, what in (("plain", "only forks"), ("decode", "decodes a request per child")):
        out = subprocess.run(
            [
                sys.executable,
                "-I",
                "-S",
                "-c",
                _zygote_client.BOOT_IMPORTS + _FLOOR,
                package,
                mode,
                str(n),
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        print(
            f"floor: a frozen zygote-like parent that {what}: child USS median {float(out):.0f} kB"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--n", type=int, default=20, help="children (default 20)")
    parser.add_argument("--floor", action="store_true", help="also run the floor experiment")
    args = parser.parse_args()
    if args.n < 1:
        parser.error("--n must be at least 1")
    trio.run(measure, args.n)
    if args.floor:
        floor(args.n)


if __name__ == "__main__":
    main()
