"""nsup's pytest plugin, registered through the ``pytest11`` entry point.

Fixtures for pytest-trio tests:

- ``nsup_spawn``: ``proc = await nsup_spawn(["python3", "worker.py"], namespaces=[...])``
  starts an isolated worker (argv plus :class:`nsup.ProcessSpec` keywords, or
  a ready ``ProcessSpec``) and returns its :class:`nsup.Process`.  At teardown
  every worker the test started is stopped (its stop signal, then SIGKILL
  after its stop timeout) and reaped, in reverse order of start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from ._process import start_process
from ._spec import ProcessSpec

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from ._process import Process

__all__ = ["nsup_spawn"]


@pytest.fixture
async def nsup_spawn() -> AsyncIterator[Callable[..., Awaitable[Process]]]:
    """Start isolated workers for this test; all are stopped and reaped at teardown."""
    started: list[Process] = []

    async def spawn(argv_or_spec: ProcessSpec | list[str], **options: Any) -> Process:
        if isinstance(argv_or_spec, ProcessSpec):
            if options:
                raise TypeError("pass either a ProcessSpec or argv with keyword options, not both")
            spec = argv_or_spec
        else:
            spec = ProcessSpec(argv=argv_or_spec, **options)
        proc = await start_process(spec)
        started.append(proc)
        return proc

    try:
        yield spawn
    finally:
        while started:
            await started.pop().aclose()
