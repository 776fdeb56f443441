"""nsup: a Linux process supervisor for trio, built on clone3, pidfds and namespaces.

Public names are re-exported here as ``X as X``; everything else is private.
``nsup.lowlevel`` holds the second tier.
"""

from __future__ import annotations

from ._errors import NsupError as NsupError
from ._errors import PolicyError as PolicyError
from ._errors import SpawnError as SpawnError
from ._errors import SpecError as SpecError
from ._exitstatus import ExitStatus as ExitStatus
from ._mount import Mount as Mount
from ._process import Process as Process
from ._process import spawn as spawn
from ._spec import ProcessSpec as ProcessSpec

__version__ = "0.1.0.dev0"
