"""The public names: each exported once, from the module that owns it, and nothing private."""

from __future__ import annotations

import pytest

import nsup
import nsup.lowlevel
import nsup.testing

PUBLIC = [
    "Backoff", "CgroupStatistics", "Event", "ExitStatus", "GaveUpError", "HealthProbe", "Limits",
    "Mount", "NsupError", "Policy", "PolicyError", "PolicyIssue", "Probe", "Process",
    "ProcessSpec", "Service", "ServiceInstance", "ServiceStatus", "Socket", "SpawnError", "SpecError",
    "Stop", "Supervisor", "SupervisorConfig", "load_policy", "open_supervisor", "spawn",
]  # fmt: skip


def test_public_names_are_exactly_these():
    exported = sorted(
        n
        for n in vars(nsup)
        if n.isidentifier()
        and not n.startswith("_")
        and n not in {"annotations", "lowlevel", "testing", "pytest_plugin"}
    )
    assert sorted(PUBLIC) == exported


@pytest.mark.parametrize("name", PUBLIC)
def test_in_namespace(name):
    assert getattr(nsup, name).__module__.startswith("nsup._")


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (nsup.PolicyError, ValueError),
        (nsup.SpecError, ValueError),
        (nsup.SpawnError, OSError),
        (nsup.GaveUpError, RuntimeError),
    ],
)
def test_errors_refine_a_builtin(error, builtin):
    assert issubclass(error, nsup.NsupError)
    assert issubclass(error, builtin)


def test_lowlevel_tier():
    assert nsup.lowlevel.start_process.__module__ == "nsup._process"
