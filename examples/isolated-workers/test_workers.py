"""Isolated workers under test, with nsup's pytest plugin (installed with nsup).

Every worker gets its own PID and network namespace, so two of them can bind
the same port; whatever a test starts is stopped and reaped when it ends,
and a process that escaped or ignored its stop signal fails the test.
"""

import os
import sys

from nsup.testing import SpawnFixture, SupervisorFixture

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.py")
ISOLATED = ["pid", "mount", "net"]


async def test_two_workers_bind_the_same_port_without_conflict(nsup_spawn: SpawnFixture) -> None:
    a = await nsup_spawn([sys.executable, WORKER, "8080"], namespaces=ISOLATED)
    b = await nsup_spawn([sys.executable, WORKER, "8080"], namespaces=ISOLATED)
    ns_a = (await a.expect_line(r"listening on 8080 in (net:\[\d+\])")).group(1)
    ns_b = (await b.expect_line(r"listening on 8080 in (net:\[\d+\])")).group(1)
    assert ns_a != ns_b

    for worker in (a, b):
        await worker.send("call\n")
        await worker.expect_line("reply: HELLO")
        await worker.send("quit\n")
        await worker.expect_exit(code=0)


async def test_in_the_host_network_the_second_worker_cannot_bind(nsup_spawn: SpawnFixture) -> None:
    first = await nsup_spawn([sys.executable, WORKER, "0"], namespaces=[])
    port = (await first.expect_line(r"listening on (\d+)")).group(1)
    second = await nsup_spawn([sys.executable, WORKER, port], namespaces=[])
    await second.expect_line("cannot bind .*: Address already in use")
    await second.expect_exit(code=1)
    # `first` is still running: the plugin stops it at teardown.


async def test_a_supervised_pair(nsup_supervisor: SupervisorFixture) -> None:
    sup = await nsup_supervisor(
        {
            "services": {
                "worker": {
                    "command": [sys.executable, WORKER, "8080"],
                    "instances": 2,
                    "namespaces": ISOLATED,
                    "ready": {"log": "listening on 8080"},
                }
            }
        }
    )
    status = sup.status()
    assert ["worker.0", "worker.1"] == list(status)
    assert all(s.ready for s in status.values())
