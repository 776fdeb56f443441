"""nsup's second tier: building blocks below ``spawn`` and ``open_supervisor``."""

from __future__ import annotations

from ._process import start_process as start_process
from ._util import fixup_module_metadata

fixup_module_metadata(__name__, globals())
del fixup_module_metadata
