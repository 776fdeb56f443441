"""nsup: a Linux process supervisor for trio, built on clone3, pidfds and namespaces.

Public names are re-exported here as ``X as X``; everything else is private.
``nsup.lowlevel`` holds the second tier and ``nsup.testing`` the test helpers.

The package, from the bottom layer up (each imports only from layers below it;
docs/architecture.md says more):

- ``_clone/``: the spawn zone, loaded by the zygote; standard library only
  (``zygote``, ``child``, ``init``, ``syscalls``, ``namespaces``, ``caps``).
- ``_errors``, ``_exitstatus``, ``_limits``, ``_mount``: value types and errors
  shared by every layer above; ``_util``: ``NoPublicConstructor`` and
  ``fixup_module_metadata``, which makes exported names show ``nsup.X``.
- the process layer: ``_spec`` (ProcessSpec), ``_process`` (Process, spawn,
  run_process, start_process),
  ``_zygote_client``, ``_cgroup``, ``_spawn_errors``.
- ``_policy/``: the declarative policy (model, schema, validate, build, lines, units).
- ``_engine/``: supervision (restart table, runner, supervisor, probes, events,
  output, notify, service_spec).
- ``_control/``: the edges clients talk to (control server and client, HTTP).
- ``_cli/``: one module per subcommand.
- ``testing``, ``pytest_plugin``, ``lowlevel``: the public add-ons.
"""

from __future__ import annotations

# ``import nsup; nsup.lowlevel`` works, as ``trio.lowlevel`` does; ``nsup.testing``
# (the test helpers) is imported explicitly, as ``trio.testing`` is.
from . import lowlevel as lowlevel
from ._cgroup import CgroupStatistics as CgroupStatistics
from ._engine.events import Event as Event
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
from ._util import fixup_module_metadata

__version__ = "0.1.0.dev0"

fixup_module_metadata(__name__, globals())
del fixup_module_metadata
