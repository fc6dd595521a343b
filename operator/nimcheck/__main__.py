"""`python -m nimcheck` and the `kubectl-nim` console script."""

from __future__ import annotations

import sys

from nimcheck.cli import main

if __name__ == "__main__":
    sys.exit(main())
