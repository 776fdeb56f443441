"""nsup: a Linux process supervisor for trio, built on clone3, pidfds and namespaces.

Public names are re-exported here (loaded on first use, PEP 562); everything
else is private.
``nsup.lowlevel`` holds the second tier and ``nsup.testing`` the test helpers.

The package, from the bottom layer up (each imports only from layers below it;
docs/architecture.md says more):

- ``_clone/``: the spawn zone, loaded by the zygote; standard library only
  (``zygote``, ``clone``, ``child``, ``init``, ``oneshot``, ``syscalls``,
  ``namespaces``, ``caps``, ``rlimits``, ``title``).
- ``_errors``, ``_exitstatus``, ``_limits``, ``_mount``: value types and errors
  shared by every layer above; ``_util``: ``NoPublicConstructor`` and
  ``fixup_module_metadata``, which makes exported names show ``nsup.X``.
- ``_spec_rules``: the checks and rules of a spec, shared by ProcessSpec and
  ``nsup exec``'s attrs-free spec.
- the process layer: ``_spec`` (ProcessSpec), ``_process`` (Process, spawn,
  run_process, start_process), ``_request`` (the clone request),
  ``_zygote_client``, ``_cgroup``, ``_spawn_errors``.
- ``_policy/``: the declarative policy (model, schema, validate, build, lines, units).
- ``_engine/``: supervision (restart table, runner, supervisor, probes, events,
  output, lines, notify, service_spec).
- ``_control/``: the edges clients talk to (control server and client, HTTP).
- ``_cli/``: one module per subcommand.
- ``testing``, ``pytest_plugin``, ``lowlevel``: the public add-ons.
"""

from __future__ import annotations

import importlib
import sys

__version__ = "0.1.0.dev0"

# Public name -> the private module that owns it.  Each loads on first use (PEP 562),
# so ``nsup exec``, ``nsup check`` and ``nsup status`` never pay for what they do not
# use (trio above all); ``from nsup import X`` and ``nsup.X`` work as before.
_EXPORTS = {
    "Backoff": "_policy.model",
    "CgroupStatistics": "_cgroup",
    "Event": "_engine.events",
    "ExitStatus": "_exitstatus",
    "GaveUpError": "_engine.supervisor",
    "HealthProbe": "_policy.model",
    "Limits": "_limits",
    "Mount": "_mount",
    "NotReadyError": "_engine.supervisor",
    "NsupError": "_errors",
    "OutputLine": "_engine.lines",
    "Policy": "_policy",
    "PolicyError": "_errors",
    "PolicyIssue": "_policy.model",
    "Probe": "_policy.model",
    "Process": "_process",
    "ProcessSpec": "_spec",
    "Service": "_policy.model",
    "ServiceInstance": "_policy",
    "ServiceStatus": "_engine.runner",
    "Socket": "_policy.model",
    "SpawnError": "_errors",
    "SpecError": "_errors",
    "Stop": "_policy.model",
    "Supervisor": "_engine.supervisor",
    "SupervisorConfig": "_policy.model",
    "SupervisorFinishedError": "_engine.supervisor",
    "load_policy": "_policy",
    "open_supervisor": "_engine.supervisor",
    "run_process": "_process",
    "spawn": "_process",
}

# ``import nsup; nsup.lowlevel`` works, as ``trio.lowlevel`` does, loaded on first use too.
_SUBMODULES = frozenset({"lowlevel", "testing"})

__all__ = sorted([*_EXPORTS, "lowlevel"])  # noqa: PLE0605 - built from the one table of public names


def __getattr__(name: str) -> Any:
    """Import a public name's module the first time the name is used."""
    if name in _SUBMODULES:
        return importlib.import_module(f"nsup.{name}")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'nsup' has no attribute {name!r}")
    importlib.import_module(f"nsup.{module}")
    _claim_loaded()
    return globals()[name]


def _claim_loaded() -> None:
    """Bind every public name whose module is loaded, shown as ``nsup.X`` (repr, tracebacks, help).

    Not just the name asked for: ``from nsup import ProcessSpec`` loads
    ``_errors`` too, and a ``SpecError`` it raises must say ``nsup.SpecError``.
    """
    from ._util import fixup_module_metadata  # noqa: PLC0415 - with the first public name

    loaded = {}
    for export, module in _EXPORTS.items():
        owner = sys.modules.get(f"nsup.{module}")
        if export not in globals() and owner is not None and hasattr(owner, export):
            loaded[export] = getattr(owner, export)
    fixup_module_metadata(__name__, loaded)
    globals().update(loaded)


def __dir__() -> list[str]:
    """List the public names, loaded or not, and the module's dunders."""
    return sorted({*__all__, *(n for n in globals() if n.startswith("__"))})


TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time
if TYPE_CHECKING:
    from typing import Any

    from . import lowlevel as lowlevel
    from ._cgroup import CgroupStatistics as CgroupStatistics
    from ._engine.events import Event as Event
    from ._engine.lines import OutputLine as OutputLine
    from ._engine.runner import ServiceStatus as ServiceStatus
    from ._engine.supervisor import GaveUpError as GaveUpError
    from ._engine.supervisor import NotReadyError as NotReadyError
    from ._engine.supervisor import Supervisor as Supervisor
    from ._engine.supervisor import SupervisorFinishedError as SupervisorFinishedError
    from ._engine.supervisor import open_supervisor as open_supervisor
    from ._errors import NsupError as NsupError
    from ._errors import PolicyError as PolicyError
    from ._errors import SpawnError as SpawnError
    from ._errors import SpecError as SpecError
    from ._exitstatus import ExitStatus as ExitStatus
    from ._limits import Limits as Limits
    from ._mount import Mount as Mount
    from ._policy import Policy as Policy
    from ._policy import ServiceInstance as ServiceInstance
    from ._policy import load_policy as load_policy
    from ._policy.model import Backoff as Backoff
    from ._policy.model import HealthProbe as HealthProbe
    from ._policy.model import PolicyIssue as PolicyIssue
    from ._policy.model import Probe as Probe
    from ._policy.model import Service as Service
    from ._policy.model import Socket as Socket
    from ._policy.model import Stop as Stop
    from ._policy.model import SupervisorConfig as SupervisorConfig
    from ._process import Process as Process
    from ._process import run_process as run_process
    from ._process import spawn as spawn
    from ._spec import ProcessSpec as ProcessSpec
