"""``ps`` shows nsup's own processes by short names, not the interpreter's command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import trio

import nsup
from nsup import _zygote_client
from nsup._engine.supervisor import open_supervisor
from nsup._policy import Policy


def _shown(pid: int) -> tuple[str, str]:
    """Return (comm, the command line as ps shows it) of *pid*."""
    comm = Path(f"/proc/{pid}/comm").read_text().strip()
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0")
    return comm, cmdline.replace(b"\0", b" ").decode()


@pytest.mark.parametrize("namespaces", [["pid", "mount"], []])
async def test_init_and_zygote_show_short_names(namespaces):
    spec = nsup.ProcessSpec(argv=["sleep", "30"], namespaces=namespaces)
    async with nsup.spawn(spec) as proc:
        assert _shown(proc.pid) == ("nsup-init", "nsup-init: sleep")
        zygotes = _zygote_client.zygote_pids()  # a second one after concurrent spawns
        assert zygotes
        for zygote in zygotes:
            assert _shown(zygote) == ("nsup-zygote", "nsup-zygote")
        proc.kill()


async def test_a_services_init_shows_the_service_name():
    policy = Policy.from_dict({"services": {"web": {"command": ["sleep", "30"]}}})
    async with open_supervisor(policy, output=lambda _name, _line: None) as sup:
        status = sup.status()["web"]
        assert status.init_pid is not None  # ServiceStatus.pid is the command's
        assert _shown(status.init_pid) == ("nsup-init", "nsup-init: web")
        # Started means cloned: the command's process may not have reached its exec yet,
        # and the kernel gives no event for an exec, so poll (bounded).
        with trio.fail_after(30):
            while _shown(status.pid)[0] != "sleep":  # noqa: ASYNC110 - no event for an exec
                await trio.sleep(0.01)


def test_the_command_sees_its_inits_title_from_the_start():
    result = subprocess.run(
        [
            *[sys.executable, "-m", "nsup"],
            "exec",
            "--",
            "sh",
            "-c",
            "cat /proc/1/comm /proc/1/cmdline",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout == "nsup-init\nnsup-init: sh\0"
