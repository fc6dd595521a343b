"""`kubectl nim check`: the NIM API reference as one command, against a NimService by name.

Entry points: :func:`main` (the `kubectl-nim` console script: `kubectl-nim check NAME ...`) and
:func:`check_main` (the arguments after `check`, for `nimop check`). docs/check.md lists every
check, flag and exit status.
"""

from nimcheck.cli import add_check_arguments, build_parser, check_main, main, run

__all__ = ["add_check_arguments", "build_parser", "check_main", "main", "run"]
