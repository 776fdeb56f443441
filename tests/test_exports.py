"""The public names: each exported once, shown under its public home, and nothing private."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys

import pytest

import nsup
import nsup.lowlevel
import nsup.testing

PUBLIC = [
    "Backoff", "CgroupStatistics", "Event", "ExitStatus", "GaveUpError", "HealthProbe", "Limits",
    "Mount", "NotReadyError", "NsupError", "OutputLine", "Policy", "PolicyError", "PolicyIssue", "Probe", "Process",
    "ProcessSpec", "Service", "ServiceInstance", "ServiceStatus", "Socket", "SpawnError",
    "SpecError",
    "Stop", "Supervisor", "SupervisorConfig", "SupervisorFinishedError", "load_policy", "open_supervisor", "run_process",
    "spawn",
]  # fmt: skip
LOWLEVEL = ["start_process"]
TESTING = ["NsupLeakWarning", "SpawnFixture", "SupervisorFixture", "Worker"]
SUBMODULES = {"lowlevel"}  # imported by ``import nsup``, as trio imports its lowlevel

NAMESPACES = [(nsup, PUBLIC), (nsup.lowlevel, LOWLEVEL), (nsup.testing, TESTING)]


def _public(module) -> list[str]:
    if module is nsup.testing:
        return sorted(module.__all__)  # a module with code of its own: __all__ says what is public
    if module is nsup:  # names load on first use (PEP 562): dir() lists them all
        return sorted(n for n in dir(nsup) if not n.startswith("_"))
    return sorted(
        name
        for name, value in vars(module).items()
        if name.isidentifier()  # pytest's assertion rewriting adds "@py_builtins"
        and not name.startswith("_")
        and name != "annotations"
        and not (inspect.ismodule(value) and name not in SUBMODULES)
    )


@pytest.mark.parametrize(("module", "names"), NAMESPACES, ids=["nsup", "lowlevel", "testing"])
def test_public_names_are_exactly_these(module, names):
    expected = sorted(names) + (sorted(SUBMODULES) if module is nsup else [])
    assert sorted(expected) == _public(module)


def test_public_names_load_on_first_use():
    # `import nsup` alone must not load trio or attrs: `nsup exec` and `nsup status` rely on it.
    code = (
        "import sys, nsup; print(sorted({'trio', 'attrs'} & set(sys.modules)), "
        "nsup.Limits.__module__, 'attrs' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["[]", "nsup", "True"]


def test_an_error_shows_its_public_home_before_its_name_is_used():
    code = (
        "from nsup import ProcessSpec\n"
        "try:\n    ProcessSpec(argv=[])\n"
        "except Exception as exc:\n    print(type(exc).__module__, type(exc).__qualname__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["nsup", "SpecError"]


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        nsup.nope  # noqa: B018 - the lookup is the test


def test_all_lists_every_public_name():
    assert nsup.__all__ == sorted([*PUBLIC, *SUBMODULES])


def test_lowlevel_comes_with_import_nsup():
    """``import nsup; nsup.lowlevel.start_process`` works without importing nsup.lowlevel."""
    program = "import nsup; print(nsup.lowlevel.start_process.__module__)"
    out = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True
    )
    assert "nsup.lowlevel" == out.stdout.strip()


ALIASES = {
    "SpawnFixture",
    "SupervisorFixture",
}  # type aliases: typing objects, no home of their own


@pytest.mark.parametrize(
    "qualified",
    [f"{m.__name__}.{n}" for m, names in NAMESPACES for n in names if n not in ALIASES],
)
def test_each_name_shows_its_public_home(qualified):
    module_name, _, name = qualified.rpartition(".")
    obj = getattr(sys.modules[module_name], name)
    assert (module_name, name) == (obj.__module__, obj.__qualname__)


def test_methods_show_the_public_home_too():
    assert "nsup" == nsup.Process.stop.__module__
    assert "Process.stop" == nsup.Process.stop.__qualname__
    assert "nsup" == nsup.ProcessSpec.__init__.__module__


def test_lowlevel_tier():
    assert "nsup.lowlevel" == nsup.lowlevel.start_process.__module__


NO_PUBLIC_CONSTRUCTOR = [
    (nsup.Process, "nsup.Process has no public constructor; use nsup.spawn()"),
    (
        nsup.testing.Worker,
        "nsup.testing.Worker has no public constructor; use the nsup_spawn fixture",
    ),
    (nsup.Supervisor, "nsup.Supervisor has no public constructor; use nsup.open_supervisor()"),
]


@pytest.mark.parametrize(("cls", "message"), NO_PUBLIC_CONSTRUCTOR)
def test_handles_only_nsup_builds_have_no_public_constructor(cls, message):
    with pytest.raises(TypeError, match=re.escape(message)):
        cls()
    assert getattr(cls, "__final__", False), f"{cls.__qualname__} is not @final"


def test_only_those_handles_refuse_construction():
    """Every other exported class is a value or an error the user may build."""
    refusing = {
        f"{module.__name__}.{name}"
        for module, names in NAMESPACES
        for name in names
        if isinstance(getattr(module, name), type)
        and type(getattr(module, name)).__name__ == "NoPublicConstructor"
    }
    assert {f"{c.__module__}.{c.__qualname__}" for c, _ in NO_PUBLIC_CONSTRUCTOR} == refusing


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (nsup.PolicyError, ValueError),
        (nsup.SpecError, ValueError),
        (nsup.SpawnError, OSError),
        (nsup.GaveUpError, RuntimeError),
        (nsup.NotReadyError, RuntimeError),
        (nsup.SupervisorFinishedError, RuntimeError),
    ],
)
def test_errors_refine_a_builtin(error, builtin):
    assert issubclass(error, nsup.NsupError)
    assert issubclass(error, builtin)


def test_tracebacks_name_the_public_class():
    with pytest.raises(nsup.SpecError) as info:
        nsup.ProcessSpec(argv=[])
    assert "nsup.SpecError" == f"{type(info.value).__module__}.{type(info.value).__qualname__}"


@pytest.mark.parametrize(
    "cls",
    [
        nsup.Supervisor,
        nsup.ServiceStatus,
        nsup.Event,
        nsup.ExitStatus,
        nsup.CgroupStatistics,
        nsup.ServiceInstance,
        nsup.OutputLine,
    ],
)
def test_what_nsup_hands_out_is_final(cls):
    assert getattr(cls, "__final__", False), f"{cls.__qualname__} is not @final"


def test_the_supervisor_shows_only_its_api():
    """Its state is private: no public attribute a user could rebind or mutate."""
    public = {n for n in vars(nsup.Supervisor) if not n.startswith("_")}
    api = {
        "status", "failed", "start", "stop", "restart", "signal", "events", "reload",
        "add", "remove", "wait_ready", "lines", "stop_all", "reopen_logs", "wait_finished",
        "policy", "started_at", "stopping", "finished", "gave_up",
    }  # fmt: skip
    # What its runners ask (RunnerHost) reaches them through a private host object.
    assert api == public
    for name in ("policy", "started_at", "stopping", "finished", "gave_up"):
        prop = vars(nsup.Supervisor)[name]
        assert isinstance(prop, property), name
        assert prop.fset is None, f"{name} is writable"
