"""The pytest plugin, through real inner pytest sessions (pytester).

Each test writes a small project, runs pytest on it in a subprocess and
checks the outcome, the report and, from outside, that every process the
inner test started is gone.  The inner processes inherit this suite's leak
marker, so the suite's own leak check would also catch anything left behind.
"""

from __future__ import annotations

import os
import select
import textwrap
from pathlib import Path

import pytest
from helpers import PYTHON

pytest_plugins = ["pytester"]

INI = "[pytest]\ntrio_mode = true\nfilterwarnings = error\n"


def run_inner(pytester, source, *args, ini=INI):
    pytester.makeini(ini)
    pytester.makepyfile(
        test_inner=f"import pathlib, signal, trio, nsup\nPYTHON = {PYTHON!r}\n"
        + SAVE_PIDS
        + textwrap.dedent(source)
    )
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=120)


def gone(pid):
    """True if *pid* has exited (a zombie counts: it holds nothing)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], 0)[0])
    finally:
        os.close(fd)


def read_pids(pytester):
    return [int(p) for p in (pytester.path / "pids.txt").read_text().split()]


SAVE_PIDS = """
def save_pids(*pids):
    pathlib.Path("pids.txt").write_text(" ".join(map(str, pids)))
"""


def test_a_passing_test_with_workers(pytester):
    result = run_inner(
        pytester,
        """
        async def test_workers(nsup_spawn):
            echo = await nsup_spawn([PYTHON, "-u", "-c", "import sys\\nfor l in sys.stdin: print('got', l.strip())"])
            shell = await nsup_spawn(["sh", "-c", "echo hello from $$; exec sleep 1000"])
            assert (await shell.expect_line(r"hello from (\\d+)")).group(1) == "2"
            await echo.send("ping\\n")
            await echo.expect_line("got ping")
            await echo.close_stdin()
            await echo.expect_exit(code=0)
            save_pids(echo.pid, shell.pid)
        """,
    )
    result.assert_outcomes(passed=1)
    assert all(gone(pid) for pid in read_pids(pytester))


def test_a_failing_test_still_cleans_up_everything(pytester):
    result = run_inner(
        pytester,
        """
        async def test_fails(nsup_spawn):
            isolated = await nsup_spawn(["sleep", "1000"])
            bare = await nsup_spawn(["sh", "-c", "sleep 1000 & echo child $!; wait"], namespaces=[])
            child = int((await bare.expect_line(r"child (\\d+)")).group(1))
            save_pids(isolated.pid, bare.pid, child)
            assert False, "the test fails here"
        """,
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*AssertionError: the test fails here*"])
    result.stdout.no_fnmatch_line("*left processes behind*")
    assert [True, True, True] == [gone(pid) for pid in read_pids(pytester)]


# Only a worker with neither a PID namespace nor nsup's init can lose a daemon:
# the init would be its subreaper and kill it.
DAEMON = """
async def test_leaks_a_daemon(nsup_spawn):
    worker = await nsup_spawn(
        ["sh", "-c", "(sh -c 'exec sleep 1000' & echo daemon $!); echo orphaned; exec sleep 1000"],
        namespaces=[],
        init=False,
    )
    daemon = int((await worker.expect_line(r"daemon (\\d+)")).group(1))
    await worker.expect_line("orphaned")  # its parent, the subshell, has exited
    save_pids(daemon)
"""


def test_a_double_forked_daemon_is_reported_with_its_pid_and_killed(pytester):
    result = run_inner(pytester, DAEMON)
    result.assert_outcomes(passed=1, errors=1)
    [daemon] = read_pids(pytester)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_leaks_a_daemon*",
            "*nsup: the test left processes behind (all are stopped now):",
            (
                f"*pid {daemon} escaped from the test's workers (its parent was pid *) "
                "and was stopped at teardown: *sleep 1000*"  # before or after its exec
            ),
        ]
    )
    assert gone(daemon)


def test_leaks_warn_instead_of_error_when_asked(pytester):
    result = run_inner(pytester, DAEMON, "--nsup-leaks=warn", ini="[pytest]\ntrio_mode = true\n")
    result.assert_outcomes(passed=1, warnings=1)
    [daemon] = read_pids(pytester)
    result.stdout.fnmatch_lines(
        ["*NsupLeakWarning: nsup: the test left processes behind*", f"*pid {daemon} escaped*"]
    )
    assert gone(daemon)


def test_the_ini_option_chooses_warnings_too(pytester):
    result = run_inner(pytester, DAEMON, ini="[pytest]\ntrio_mode = true\nnsup_leaks = warn\n")
    result.assert_outcomes(passed=1, warnings=1)
    assert gone(read_pids(pytester)[0])


def test_a_worker_that_ignores_its_stop_signal_is_killed_and_reported(pytester):
    result = run_inner(
        pytester,
        """
        IGNORE = "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); signal.pause()"

        async def test_stubborn(nsup_spawn):
            worker = await nsup_spawn([PYTHON, "-c", IGNORE], namespaces=[])
            await worker.expect_line("ready")
            save_pids(worker.pid)
        """,
        "--nsup-teardown-timeout=0.3",
    )
    result.assert_outcomes(passed=1, errors=1)
    [pid] = read_pids(pytester)
    result.stdout.fnmatch_lines(
        [f"*pid {pid} ignored SIGTERM for 0.3s at teardown and was killed: {PYTHON} -c *"]
    )
    assert gone(pid)


def test_a_test_cancelled_by_a_timeout_leaves_nothing_behind(pytester):
    result = run_inner(
        pytester,
        """
        async def test_times_out(nsup_spawn):
            with trio.fail_after(1):
                a = await nsup_spawn(["sh", "-c", "sleep 1000 & echo child $!; wait"], namespaces=[])
                b = await nsup_spawn(["sh", "-c", "sleep 1000 & wait"])
                child = int((await a.expect_line(r"child (\\d+)")).group(1))
                save_pids(a.pid, b.pid, child)
                await a.wait()
        """,
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*TooSlowError*"])
    result.stdout.no_fnmatch_line("*left processes behind*")
    assert [True, True, True] == [gone(pid) for pid in read_pids(pytester)]


def test_two_workers_bind_the_same_port_in_their_own_network_namespaces(pytester):
    result = run_inner(
        pytester,
        """
        SERVE = (
            "import socket\\n"
            "s = socket.create_server(('127.0.0.1', 8765))\\n"
            "print('listening on', s.getsockname()[1], flush=True)\\n"
            "input()\\n"
        )

        async def test_same_port(nsup_spawn):
            workers = [
                await nsup_spawn([PYTHON, "-c", SERVE], namespaces=["pid", "mount", "net"])
                for _ in range(2)
            ]
            for worker in workers:
                assert (await worker.expect_line(r"listening on (\\d+)")).group(1) == "8765"
            for worker in workers:
                await worker.send("bye\\n")
                await worker.expect_exit(code=0)

        async def test_without_them_the_second_one_fails(nsup_spawn):
            first = await nsup_spawn([PYTHON, "-c", SERVE], namespaces=["net"])
            await first.expect_line("listening")
            second = await nsup_spawn([PYTHON, "-c", SERVE], namespaces=[])
            await second.expect_line("listening")  # the host's port is free
            third = await nsup_spawn([PYTHON, "-c", SERVE], namespaces=[])
            await third.expect_line("Address already in use")
            await third.expect_exit(code=1)
        """,
    )
    result.assert_outcomes(passed=2)


def test_supervisor_from_a_dict_and_from_a_path(pytester):
    pytester.makefile(
        ".toml",
        policy='[services.db]\ncommand = ["sleep", "1000"]\n'
        '[services.web]\ncommand = ["sleep", "1000"]\ndepends_on = ["db"]\n',
    )
    result = run_inner(
        pytester,
        """
        async def test_supervisors(nsup_supervisor):
            one = await nsup_supervisor({"services": {"w": {"command": ["sleep", "1000"], "instances": 2}}})
            two = await nsup_supervisor("policy.toml")
            assert ["w.0", "w.1"] == list(one.status())
            assert ["db", "web"] == list(two.status())
            save_pids(*(s.pid for sup in (one, two) for s in sup.status().values()))
        """,
    )
    result.assert_outcomes(passed=1)
    pids = read_pids(pytester)
    assert 4 == len(pids)
    assert all(gone(pid) for pid in pids)


def test_a_daemon_escaping_a_supervised_service_is_reported(pytester):
    result = run_inner(
        pytester,
        """
        async def test_leaky_service(nsup_supervisor, tmp_path):
            flag = tmp_path / "daemon"
            # The flag appears once the daemon's parent (the subshell) has exited.
            command = f"(sh -c 'exec sleep 1000' & echo $! > {flag}.new); mv {flag}.new {flag}; exec sleep 1000"
            await nsup_supervisor({"services": {"leaky": {"command": ["sh", "-c", command], "namespaces": [], "init": False}}})
            with trio.fail_after(5):
                while not flag.exists() or not flag.read_text().strip():
                    await trio.sleep(0.01)  # the daemon writes it: no event to wait on
            save_pids(int(flag.read_text()))
        """,
    )
    result.assert_outcomes(passed=1, errors=1)
    [daemon] = read_pids(pytester)
    result.stdout.fnmatch_lines([f"*pid {daemon} escaped from the test's workers*sleep 1000*"])
    assert gone(daemon)


def test_a_service_that_ignores_its_stop_signal_is_reported(pytester):
    result = run_inner(
        pytester,
        """
        async def test_stubborn_service(nsup_supervisor):
            # Ready once the trap is set: a SIGTERM before it would end the shell at once.
            command = ["sh", "-c", "trap '' TERM; echo trapped; while :; do sleep 0.1; done"]
            service = {"command": command, "namespaces": [], "stop": {"timeout": "0.3s"},
                       "ready": {"log": "trapped"}}
            await nsup_supervisor({"services": {"stubborn": service}})
        """,
    )
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        ["*pid * ignored SIGTERM for 0.3s at teardown and was killed: sh -c *"]
    )


def test_a_supervisor_that_gives_up_fails_the_test(pytester):
    result = run_inner(
        pytester,
        """
        async def test_gives_up(nsup_supervisor):
            policy = {
                "supervisor": {"max_restarts": 1, "within": "60s"},
                "services": {"crash": {"command": ["sh", "-c", "exit 3"], "restart": "always",
                                        "backoff": {"initial": "10ms"}}},
            }
            await nsup_supervisor(policy)
            await trio.sleep_forever()
        """,
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*GaveUpError: gave up: 'crash' made more than 1 restart within 1m*"]
    )


# --- misuse -------------------------------------------------------------------


def test_the_fixtures_need_a_trio_test(pytester):
    result = run_inner(
        pytester,
        """
        def test_sync(nsup_spawn):
            pass
        """,
        ini="[pytest]\n",
    )
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            (
                "*the nsup fixtures (nsup_spawn) need a trio test, and 'test_sync' is not one; make it 'async def' "
                "and mark it with @pytest.mark.trio, or set trio_mode = true in the pytest "
                "configuration (pytest-trio)"
            )
        ]
    )


def test_a_spec_and_options_together_are_refused(pytester):
    result = run_inner(
        pytester,
        """
        import pytest

        async def test_both(nsup_spawn):
            spec = nsup.ProcessSpec(argv=["true"])
            with pytest.raises(TypeError) as info:
                await nsup_spawn(spec, namespaces=[])
            assert info.value.args == (
                "nsup_spawn() takes either a ProcessSpec or argv with keyword options, "
                "not both (got a spec and ['namespaces'])",
            )
        """,
    )
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("args", "ini", "message"),
    [
        (
            ["--nsup-teardown-timeout=0"],
            "",
            "*the nsup teardown timeout must be positive (got 0.0)*",
        ),
        (
            [],
            "nsup_teardown_timeout = soon\n",
            "*nsup_teardown_timeout must be a number of seconds (got 'soon')*",
        ),
        ([], "nsup_leaks = ignore\n", "*nsup_leaks must be 'error' or 'warn' (got 'ignore')*"),
        (["--nsup-leaks=ignore"], "", "*argument --nsup-leaks: invalid choice: 'ignore'*"),
    ],
)
def test_bad_options_are_usage_errors(pytester, args, ini, message):
    result = run_inner(pytester, "async def test_nothing():\n    pass\n", *args, ini=INI + ini)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_the_example_project_passes(pytester):
    """The README's command for examples/isolated-workers, run from here."""
    example = Path(__file__).resolve().parent.parent / "examples" / "isolated-workers"
    result = pytester.runpytest_subprocess(str(example), timeout=120)
    result.assert_outcomes(passed=3)
