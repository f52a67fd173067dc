"""``python -m dbosify``: the ``dbosify`` command (dbosify/cli/)."""

from __future__ import annotations

import sys

from dbosify.cli import main

if __name__ == "__main__":
    sys.exit(main())
