"""Several zygotes per thread (``_zygote_client.ZYGOTES``): concurrent spawns share them.

Real zygotes and children, as root.  Each test leaves this thread with at
most its first zygote (``one_zygote``), so tests that expect exactly one
(``test_titles``) see one; the suite's leak check proves nothing else is left.
"""

from __future__ import annotations

import os
import signal
import threading

import pytest
import trio
from helpers import kill_and_wait

import nsup
from nsup import _zygote_client

BARE = nsup.ProcessSpec(argv=["true"], namespaces=set(), init=False)


@pytest.fixture(autouse=True)
def two_zygotes(monkeypatch):
    """Allow two zygotes on any machine; close every zygote past the first afterwards."""
    monkeypatch.setattr(_zygote_client, "ZYGOTES", 2)
    yield
    here = (os.getpid(), threading.get_ident())
    for key in [k for k in _zygote_client._zygotes if k[:2] == here and k[2] > 0]:
        _zygote_client._zygotes.pop(key).close()


async def _run_many(n: int) -> list[nsup.ExitStatus]:
    """Start *n* children at once (so requests find a zygote busy); return their statuses."""
    statuses: list[nsup.ExitStatus] = []

    async def one() -> None:
        async with nsup.spawn(BARE) as proc:
            statuses.append(await proc.wait())

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for _ in range(n):
                nursery.start_soon(one)
    return statuses


def _slots() -> dict[int, _zygote_client.Zygote]:
    here = (os.getpid(), threading.get_ident())
    return {k[2]: z for k, z in _zygote_client._zygotes.items() if k[:2] == here}


async def test_concurrent_spawns_start_a_second_zygote_and_use_both(monkeypatch):
    used: list[int] = []
    clone = _zygote_client.Zygote.clone

    async def counting(self, request, fds):
        used.append(self.pid)
        return await clone(self, request, fds)

    monkeypatch.setattr(_zygote_client.Zygote, "clone", counting)
    assert await _run_many(16) == [nsup.ExitStatus(code=0)] * 16
    slots = _slots()
    assert sorted(slots) == [0, 1]
    assert set(used) == {z.pid for z in slots.values()}
    assert _zygote_client.zygote_pids() >= {z.pid for z in slots.values()}


async def test_a_few_spawns_at_a_time_keep_one_zygote(monkeypatch):
    monkeypatch.setattr(_zygote_client, "BACKLOG", 4)
    for n in (1, 4):  # 4 at once: 3 wait for the first zygote, fewer than BACKLOG
        assert await _run_many(n) == [nsup.ExitStatus(code=0)] * n
    assert sorted(_slots()) == [0]


async def test_a_killed_second_zygote_is_replaced_and_nothing_fails():
    assert await _run_many(16) == [nsup.ExitStatus(code=0)] * 16
    old = _slots()[1]
    await kill_and_wait(old.pid)
    assert await _run_many(16) == [nsup.ExitStatus(code=0)] * 16
    assert old._proc.poll() is not None  # reaped, not left a zombie
    assert old.pid not in _zygote_client.zygote_pids()


async def test_a_stopped_zygote_is_replaced_and_nothing_fails():
    assert await _run_many(16) == [nsup.ExitStatus(code=0)] * 16
    old = _slots()[0]
    os.kill(old.pid, signal.SIGSTOP)
    try:
        assert await _run_many(16) == [nsup.ExitStatus(code=0)] * 16
    finally:
        if old._proc.poll() is None:
            os.kill(old.pid, signal.SIGKILL)
            old._proc.wait()
    assert _slots()[0] is not old


async def test_hold_zygotes_waits_for_every_zygote():
    assert await _run_many(16) == [nsup.ExitStatus(code=0)] * 16
    slots = _slots()
    async with _zygote_client.hold_zygotes():
        assert all(z._lock.locked() for z in slots.values())
    assert not any(z._lock.locked() for z in slots.values())
