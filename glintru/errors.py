"""The one exception type for errors a user can cause (bad path, malformed file, bad option).

The CLI turns a :class:`UserError` into a single ``error: ...`` line on stderr and a non-zero
exit code; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """An error caused by user input. The message names the file, line or field at fault."""

    exit_code = 2


class MlflowUnavailable(UserError):
    """MLflow could not be reached when a run or study had to log to it. Exit code 1 (not 2): the
    command line was fine, and the results are safe on disk; the message says how to log them."""

    exit_code = 1


class Terminated(KeyboardInterrupt):
    """SIGTERM (a cancelled job, ``kill``) in a command that handles it as it handles Ctrl+C
    (:func:`glintru.cli.main`): ``finally`` blocks run, so no temporary file is left behind."""


def where(path: object, line: int | None = None, field: str | None = None) -> str:
    """Format a location prefix such as ``ratings.dat:12: field 'timestamp'``."""
    out = str(path)
    if line is not None:
        out += f":{line}"
    if field is not None:
        out += f": field '{field}'"
    return out


def require_positive(*options: tuple[str, float | None]) -> None:
    """A UserError naming the first ``(option, value)`` whose value is below 1 (None: not given).
    The CLI checks counts this way before anything starts; the library functions that take the same
    counts from Python callers check them with it too, so both say the same."""
    for option, value in options:
        if value is not None and value < 1:
            raise UserError(f"{option}: must be >= 1, got {value}")
