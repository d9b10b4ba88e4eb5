"""``python -m ctrd.ctl``: same as the ``ctrdctl`` console script."""

from __future__ import annotations

import sys

from ctrd.ctl import main

sys.exit(main())
