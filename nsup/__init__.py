"""nsup: a Linux process supervisor for trio, built on clone3, pidfds and namespaces.

Public names are re-exported here as ``X as X``; everything else is private.
``nsup.lowlevel`` holds the second tier and ``nsup.testing`` the test helpers.
"""

from __future__ import annotations

from ._cgroup import CgroupStatistics as CgroupStatistics
from ._errors import NsupError as NsupError
from ._errors import PolicyError as PolicyError
from ._errors import SpawnError as SpawnError
from ._errors import SpecError as SpecError
from ._events import Event as Event
from ._exitstatus import ExitStatus as ExitStatus
from ._mount import Mount as Mount
from ._policy import Policy as Policy
from ._policy import ServiceInstance as ServiceInstance
from ._policy import load_policy as load_policy
from ._policy_model import Backoff as Backoff
from ._policy_model import HealthProbe as HealthProbe
from ._policy_model import Limits as Limits
from ._policy_model import PolicyIssue as PolicyIssue
from ._policy_model import Probe as Probe
from ._policy_model import Service as Service
from ._policy_model import Stop as Stop
from ._policy_model import SupervisorConfig as SupervisorConfig
from ._process import Process as Process
from ._process import spawn as spawn
from ._runner import ServiceStatus as ServiceStatus
from ._spec import ProcessSpec as ProcessSpec
from ._supervisor import GaveUpError as GaveUpError
from ._supervisor import Supervisor as Supervisor
from ._supervisor import open_supervisor as open_supervisor

__version__ = "0.1.0.dev0"
