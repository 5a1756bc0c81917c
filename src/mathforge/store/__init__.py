"""Embedded run storage: the SQLite request ledger and atomically written Parquet tables."""

from mathforge.store.ledger import Ledger, LedgerRow, request_key
from mathforge.store.tables import read_table, write_table, append_rejected, read_rows

__all__ = ["Ledger", "LedgerRow", "request_key", "read_table", "write_table", "append_rejected", "read_rows"]
