"""``sup.lines(name)``: a service's output as a bounded async subscription, with real processes."""

from __future__ import annotations

import signal
from contextlib import asynccontextmanager

import pytest
import trio
from helpers import PYTHON

import nsup
from nsup._engine.lines import LINE_BACKLOG_BYTES, LINE_OVERHEAD

SLEEPER = {"command": ["sleep", "100"], "namespaces": []}


@asynccontextmanager
async def supervised(services: dict, output=None):
    """Run *services* beside a bystander "keep" (so the supervisor never ends on its own)."""
    pol = nsup.Policy.from_dict({"services": {**services, "keep": SLEEPER}})
    async with nsup.open_supervisor(pol, output=output or (lambda n, l: None)) as sup:
        with trio.fail_after(60):
            yield sup


async def take(lines, n: int) -> list[nsup.OutputLine]:
    """The next *n* lines of the subscription."""
    out = []
    async for line in lines:
        out.append(line)
        if len(out) == n:
            break
    return out


def printer(script: str, **extra) -> dict:
    """A service that runs *script* in sh, then sleeps (so it stays up)."""
    return {"command": ["sh", "-c", f"{script}\nexec sleep 100"], "namespaces": [], **extra}


def once_armed(flag, script: str) -> str:
    """*script*, run only once the test made *flag*: the runs open_supervisor began print nothing."""
    return f"if [ -e {flag} ]; then {script}; fi"


async def arm(sup, *names_and_flags) -> None:
    """Stop the services, then make their flags: no shell of a first run can still see one and print.

    (A run counts as started before its shell has tested the flag, so touching the flag while the
    first runs are up races with them.)
    """
    names, flags = names_and_flags[::2], names_and_flags[1::2]
    await sup.stop(*names)
    for flag in flags:
        flag.touch()


async def test_lines_arrive_in_order_with_their_stream_from_the_first_one(tmp_path):
    script = (
        "i=1; while [ $i -le 300 ]; do echo out$i; echo err$i >&2; i=$((i+1)); done\n"
        r"printf 'bad \377 byte\n'"
    )
    async with supervised({"w": printer(once_armed(tmp_path / "f", script))}) as sup:
        await arm(sup, "w", tmp_path / "f")
        async with sup.lines("w") as lines:  # registered now, before the start
            await sup.start("w")
            got = await take(lines, 601)
    out = [line for line in got if line.stream == "stdout"]
    err = [line for line in got if line.stream == "stderr"]
    assert [f"out{i}".encode() for i in range(1, 301)] + [b"bad \xff byte"] == [
        line.data for line in out
    ]
    assert [f"err{i}".encode() for i in range(1, 301)] == [line.data for line in err]
    assert "bad \ufffd byte" == out[-1].text  # the bytes are exact; text replaces what is not UTF-8
    assert {("w", "w", 0)} == {(line.service, line.instance, line.dropped_before) for line in got}
    times = [line.time for line in out]
    assert sorted(times) == times


async def test_every_instance_and_every_run_is_followed(tmp_path):
    service = printer(once_armed(tmp_path / "f", "echo run $$"), instances=2)
    async with supervised({"w": service}) as sup:
        await arm(sup, "w", tmp_path / "f")
        async with sup.lines("w") as lines:
            await sup.start("w")
            first = await take(lines, 2)
            await sup.restart("w.1")
            (second,) = await take(lines, 1)
        status = sup.status()
    assert {("w", "w.0"), ("w", "w.1")} == {(line.service, line.instance) for line in first}
    assert ("w", "w.1") == (second.service, second.instance)
    # Each run's shell exec'd into sleep: the pid it printed is the instance's pid.
    printed = {line.instance: int(line.data.split()[1]) for line in first}
    assert status["w.0"].pid == printed["w.0"]
    assert status["w.1"].pid == int(second.data.split()[1]) != printed["w.1"]


async def test_an_instance_name_follows_that_instance_only():
    async with (
        supervised({"w": printer("echo $$", instances=2)}) as sup,
        sup.lines("w.1") as one,
        sup.lines("w") as both,
    ):
        await sup.restart("w")
        # Each run prints its pid (the shell exec's into sleep: the instance's pid).
        pids = {sup.status()[name].pid for name in ("w.0", "w.1")}
        pid_of_w1 = sup.status()["w.1"].pid
        seen = set()
        async for line in both:  # (a line of the runs before the restart may come first)
            seen.add(int(line.data))
            if pids <= seen:
                break
        # Publishing is synchronous: "w.1" had its chance at every line "w" got.
        queued = [one.receive_nowait() for _ in range(one.statistics().current_buffer_used)]
    assert {("w", "w.1")} == {(line.service, line.instance) for line in queued}
    assert pid_of_w1 in {int(line.data) for line in queued}


N = 100_000  # lines of 6 bytes ("000001"...): 5.5 MB through the pipe, far over the bound
KEPT = LINE_BACKLOG_BYTES // (6 + LINE_OVERHEAD)  # what a reader that never reads keeps
NUMBERS = [f"{i:06d}" for i in range(1, N + 1)]


async def test_a_slow_reader_loses_lines_and_nothing_else_slows(tmp_path):
    seen_by_callback = []
    all_seen = trio.Event()

    def callback(name, text):
        seen_by_callback.append((name, text))
        if text == NUMBERS[-1] and name == "w":
            all_seen.set()

    # The other service prints a burst the bound holds: its reader, which keeps reading, loses nothing.
    burst = NUMBERS[: KEPT // 2]
    services = {
        "w": printer(once_armed(tmp_path / "w", f"seq -f %06g 1 {N}")),
        "other": printer(once_armed(tmp_path / "other", f"seq -f %06g 1 {len(burst)}")),
    }
    async with supervised(services, output=callback) as sup:
        await arm(sup, "w", tmp_path / "w", "other", tmp_path / "other")
        slow = sup.lines("w")  # not read until the end
        fast = sup.lines("other")
        fast_got = []

        async def read_fast():
            async for line in fast:
                fast_got.append(line.text)
                if line.text == burst[-1]:
                    return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_fast)
            await sup.start("w", "other")
            await all_seen.wait()  # the callback got every line: the pump was never held up
        assert NUMBERS == [t for n, t in seen_by_callback if n == "w"]
        assert burst == fast_got
        assert 0 == fast.dropped
        assert N - KEPT == slow.dropped
        kept = await take(slow, KEPT)
        assert NUMBERS[:KEPT] == [k.text for k in kept]
        assert {0} == {k.dropped_before for k in kept}
        # The next line it gets says how many it lost just before it.
        await sup.restart("w")
        (after,) = await take(slow, 1)
        assert (NUMBERS[0], N - KEPT) == (after.text, after.dropped_before)
        assert "up" == sup.status()["w"].state
        assert "up" == sup.status()["other"].state
        slow.close()
        fast.close()


async def test_a_slow_reader_is_bounded_in_bytes_for_long_lines_too(tmp_path):
    # 100 lines of 65,535 bytes: 63 fit.
    script = f'{PYTHON} -c \'import sys; [sys.stdout.write("x" * 65535 + "\\n") for _ in range(100)]\'; echo end'
    kept = LINE_BACKLOG_BYTES // (65535 + LINE_OVERHEAD)
    done = trio.Event()
    async with supervised(
        {"w": printer(once_armed(tmp_path / "f", script))},
        output=lambda n, t: done.set() if t == "end" else None,
    ) as sup:
        await arm(sup, "w", tmp_path / "f")
        async with sup.lines("w") as lines:
            await sup.start("w")
            await done.wait()
            assert 100 - kept == lines.dropped
            got = await take(lines, kept + 1)
            assert 0 == lines.statistics().current_buffer_used
    assert [b"x" * 65535] * kept + [b"end"] == [line.data for line in got]
    assert [0] * kept + [100 - kept] == [line.dropped_before for line in got]


async def test_it_ends_when_the_supervisor_finishes_by_itself():
    script = 'sleep 100 & p=$!\ntrap "kill $p; echo one; echo two; exit 0" USR1\necho up\nwait\n'
    service = {
        "command": ["sh", "-c", script],
        "restart": "never",
        "ready": {"log": "up", "timeout": "30s"},
    }
    pol = nsup.Policy.from_dict({"services": {"w": service}})
    async with nsup.open_supervisor(pol, output=lambda n, l: None) as sup:
        with trio.fail_after(60):
            async with sup.lines("w") as lines:
                assert 1 == sup.signal("w", signal.SIGUSR1)
                got = [line.data async for line in lines]  # ends by itself
            assert sup.finished
    assert [b"one", b"two"] == got


async def test_it_ends_when_the_supervisor_block_is_left(tmp_path):
    got = []
    first = trio.Event()
    with trio.fail_after(60):
        # Leaving supervised() finishes the supervisor: collect() returns, the nursery closes.
        async with (
            trio.open_nursery() as outer,
            supervised({"w": printer(once_armed(tmp_path / "f", "echo hello"))}) as sup,
        ):
            await arm(sup, "w", tmp_path / "f")
            lines = sup.lines("w")

            async def collect():
                async for line in lines:
                    got.append(line.data)
                    first.set()

            outer.start_soon(collect)
            await sup.start("w")
            await first.wait()
    assert [b"hello"] == got


async def test_it_ends_when_the_service_is_removed(tmp_path):
    async with supervised({}) as sup:
        await sup.add("t", printer(once_armed(tmp_path / "f", "echo hi")))
        await arm(sup, "t", tmp_path / "f")
        async with sup.lines("t") as lines:
            await sup.start("t")
            (hi,) = await take(lines, 1)
            await sup.remove("t")
            rest = [line async for line in lines]  # ends at the removal
        assert not sup.finished
    assert b"hi" == hi.data
    assert [] == rest


async def test_a_removed_service_s_last_lines_reach_its_subscribers():
    # On SIGTERM it prints 30,000 lines (170 kB, more than a pipe holds) and exits: the last are
    # still in the pipe, or being split into lines, when it is reaped.
    script = "trap 'seq 1 30000; exit 0' TERM; echo up; while :; do sleep 0.05; done"
    service = {"command": ["sh", "-c", script], "namespaces": [], "ready": {"log": "up"}}
    async with supervised({}) as sup:
        await sup.add("t", service)
        async with sup.lines("t") as lines:
            await sup.remove("t")
            got = [line.data async for line in lines]  # ends at the removal
    assert [str(i).encode() for i in range(1, 30001)] == got


async def test_a_subscription_made_after_the_finish_ends_at_once():
    async with supervised({"w": printer("echo hi")}) as sup:
        pass
    assert sup.finished
    assert [] == [line async for line in sup.lines("w")]


async def test_an_unknown_name_is_refused():
    async with supervised({"w": printer("echo hi")}) as sup:
        with pytest.raises(KeyError, match="no service 'nope' in this supervisor"):
            sup.lines("nope")
