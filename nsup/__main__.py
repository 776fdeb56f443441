"""``python -m nsup`` is the ``nsup`` command."""

import sys

from nsup._cli import main

sys.exit(main())
