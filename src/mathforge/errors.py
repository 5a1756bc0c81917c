"""Errors that users see: each names the file, row and field (or config key) at fault."""

from __future__ import annotations


class MathforgeError(Exception):
    """Base for errors that the CLI prints as one clear message, without a traceback."""


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
