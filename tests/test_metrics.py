"""Per-service resource figures: ServiceStatus, /metrics and the control protocol agree with the cgroup files."""

from __future__ import annotations

import os

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

import nsup
from nsup._control.http import render_metrics
from nsup._control.server import status_to_dict


def _read(path: str) -> int:
    with open(path) as f:
        return int(f.read().split()[0])


def _cgroup_files(cgroup) -> dict[str, int]:
    """The figures, read straight from the kernel's files, v2 where the child has one, else v1."""
    paths = cgroup.paths
    found = {}
    if "v2" in paths and os.path.exists(f"{paths['v2']}/memory.current"):
        found["memory_bytes"] = _read(f"{paths['v2']}/memory.current")
        found["memory_peak_bytes"] = _read(f"{paths['v2']}/memory.peak")
    elif "memory" in paths:
        found["memory_bytes"] = _read(f"{paths['memory']}/memory.usage_in_bytes")
        found["memory_peak_bytes"] = _read(f"{paths['memory']}/memory.max_usage_in_bytes")
    pids = (
        paths.get("v2")
        if "v2" in paths and os.path.exists(f"{paths['v2']}/pids.current")
        else paths.get("pids")
    )
    if pids is not None:
        found["tasks"] = _read(f"{pids}/pids.current")
    return found


def _metric(text: str, name: str, service: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels.get("service") == service:
                return sample.value
    raise AssertionError(f"no {name} for {service} in /metrics")


async def test_figures_match_the_cgroup_files():
    """A service with memory and pids limits (so those controllers count it) reports what its cgroup files say."""
    policy = nsup.Policy.from_dict(
        {
            "services": {
                "web": {
                    "command": ["sleep", "1000"],
                    "limits": {"memory": "64M", "pids": 16},
                }
            }
        }
    )
    async with nsup.open_supervisor(policy) as sup:
        proc = sup._runners["web"].proc
        assert proc is not None
        cgroup = proc._cgroup
        if cgroup is None:
            pytest.skip("no cgroup hierarchy here for a service's cgroup")
        # The figures of a sleeping process are still; read the files on both sides
        # of the snapshot, until both readings agree (the kernel gives no event).
        with trio.fail_after(10):
            while True:
                before = _cgroup_files(cgroup)
                status = sup.status()["web"]
                text = render_metrics(sup)
                after = _cgroup_files(cgroup)
                if before == after:
                    break
                await trio.sleep(0.01)
        assert {"memory_bytes", "memory_peak_bytes", "tasks"} <= set(before)
        figures = {key: getattr(status, key) for key in before}
        assert before == figures
        assert 2 == status.tasks  # nsup's init (PID 1) and sleep
        for key, metric in (
            ("memory_bytes", "nsup_service_memory_bytes"),
            ("memory_peak_bytes", "nsup_service_memory_peak_bytes"),
            ("tasks", "nsup_service_tasks"),
        ):
            assert before[key] == _metric(text, metric, "web")
        assert 0 == _metric(text, "nsup_service_oom_kills_total", "web")
        assert status.cpu_seconds is not None
        assert status.cpu_seconds == pytest.approx(
            _metric(text, "nsup_service_cpu_seconds_total", "web"), abs=0.05
        )
        resources = status_to_dict(status)["resources"]
        assert {**before, "cpu_seconds": status.cpu_seconds, "oom_kills": 0} == resources


async def test_no_figures_once_ended():
    """An ended service has no running cgroup: the figures are absent, not stale."""
    policy = nsup.Policy.from_dict({"services": {"job": {"command": "true", "restart": "never"}}})
    async with nsup.open_supervisor(policy) as sup:
        with trio.fail_after(10):
            await sup.wait_finished()  # every service has ended
        status = sup.status()["job"]
        text = render_metrics(sup)
    assert "ended" == status.state
    assert (None, None, None, None) == (
        status.cpu_seconds,
        status.memory_bytes,
        status.memory_peak_bytes,
        status.tasks,
    )
    assert 'nsup_service_memory_bytes{service="job"}' not in text
    assert 'nsup_service_oom_kills_total{service="job"} 0.0' in text
