"""Errors that users see: each names the file, row and field (or config key) at fault."""

from __future__ import annotations


# Exit codes of the ``mathforge`` command (documented in docs/architecture.md, "Exit codes").
EXIT_OK = 0
EXIT_BUG = 1  # an unexpected error: a traceback, and a bug to report
EXIT_ERROR = 2  # a clear error: bad recipe or flags, malformed input, garbled run file (the message says what to do)
EXIT_INCOMPLETE = 3  # the run finished but requests failed for good (or were left unsent): its data is partial
EXIT_LOCKED = 4  # another process is writing the run directory
EXIT_IN_FLIGHT = 75  # sysexits EX_TEMPFAIL: provider batches are still running; rerun later to collect them


class MathforgeError(Exception):
    """Base for errors that the CLI prints as one clear message, without a traceback."""

    exit_code = EXIT_ERROR


class ConfigError(MathforgeError):
    """A recipe or option is invalid: unknown key, bad value, missing secret."""


class DataError(MathforgeError):
    """A row of an input file is malformed."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        field: str | None = None,
        row: int | None = None,
    ):
        where = []
        if file:
            where.append(str(file))
        if line is not None:
            where.append(f"line {line}")
        elif row is not None:  # files without lines (Parquet, hub datasets): the 1-based row number
            where.append(f"row {row}")
        if field:
            where.append(f"field '{field}'")
        self.file, self.line, self.field, self.row, self.detail = file, line, field, row, message
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


class RunLockedError(MathforgeError):
    """A second writer tried to open a run directory that another process is writing."""

    exit_code = EXIT_LOCKED

    def __init__(self, message: str, pid: int | None = None):
        super().__init__(message)
        self.pid = pid


class IncompleteRunError(MathforgeError):
    """Requests failed for good (or stayed unsent), so the run's data is partial; ``mathforge retry`` re-sends them."""

    exit_code = EXIT_INCOMPLETE

    def __init__(self, message: str, *, failed: int = 0, unsent: int = 0, summary: dict | None = None):
        super().__init__(message)
        self.failed, self.unsent, self.summary = failed, unsent, summary


class BackendError(MathforgeError):
    """A model backend cannot be used (missing extra, unreachable endpoint, rejected key)."""


def require(module: str, extra: str):
    """Import an optional heavy package lazily, naming the extra that provides it when missing."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise BackendError(
            f"this feature needs the '{module}' package: pip install 'mathforge[{extra}]'"
        ) from exc
