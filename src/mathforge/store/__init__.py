"""Embedded run storage: the SQLite request ledger and atomically written Parquet tables.

The table helpers (pyarrow, ~45 MB resident) are imported only when first used, so a process that needs only the
ledger, such as an API client at 20,000 requests in flight, stays small.
"""

from mathforge.store.ledger import Ledger, LedgerRow, request_key

_TABLES = {"read_table", "write_table", "append_rejected", "read_rows"}


def __getattr__(name: str):
    if name in _TABLES:
        from mathforge.store import tables

        return getattr(tables, name)
    raise AttributeError(f"module 'mathforge.store' has no attribute {name!r}")


__all__ = ["Ledger", "LedgerRow", "request_key", *sorted(_TABLES)]
