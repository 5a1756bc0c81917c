"""Shard tables: atomic shards with completion markers, resume after a kill, manifest, whole-table switch."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mathforge.errors import DataError
from mathforge.store.shards import MANIFEST, ShardReader, ShardWriter, map_shards, recover, switch_in
from mathforge.store.tables import RejectedWriter, append_rejected, read_rows, write_table

SCHEMA = pa.schema([("id", pa.string()), ("n", pa.int64())])


def rows(lo: int, hi: int) -> list[dict]:
    return [{"id": f"r{i}", "n": i} for i in range(lo, hi)]


def test_writer_rolls_shards_and_the_table_reads_as_one(tmp_path):
    w = ShardWriter(tmp_path / "t.parquet", SCHEMA, rows_per_shard=4, row_group=3)
    w.write(rows(0, 10))
    path = w.commit()
    manifest = json.loads((path / MANIFEST).read_text())
    assert manifest["rows"] == 10 and [s["rows"] for s in manifest["shards"]] == [4, 4, 2]
    assert sorted(p.name for p in path.iterdir()) == [MANIFEST, "part-00000.parquet", "part-00001.parquet",
                                                       "part-00002.parquet"]  # no markers or temp files left
    assert pq.read_table(path).to_pylist() == rows(0, 10)  # pyarrow reads the directory as one table, in order
    assert read_rows(path) == rows(0, 10)
    reader = ShardReader(path)
    assert reader.num_rows == 10 and len(reader) == 3
    assert [len(b) for b in reader.batches(batch_size=3)] == [3, 1, 3, 1, 2]
    assert not (tmp_path / ".t.parquet.staging").exists()


def test_empty_table_keeps_its_columns(tmp_path):
    path = ShardWriter(tmp_path / "e.parquet", SCHEMA).commit()
    assert ShardReader(path).num_rows == 0 and pq.read_table(path).schema.names == ["id", "n"]


def test_a_finished_shard_is_never_redone_and_an_unfinished_one_is_rewritten(tmp_path):
    src = ShardWriter(tmp_path / "in.parquet", SCHEMA, rows_per_shard=5)
    src.write(rows(0, 15))
    reader = ShardReader(src.commit())
    calls: list[int] = []

    def fn(batch: list[dict]) -> list[dict]:
        calls.append(batch[0]["n"])
        if batch[0]["n"] == 10:
            raise RuntimeError("killed")
        return [{**r, "n": r["n"] * 2} for r in batch]

    out = ShardWriter(tmp_path / "out.parquet", SCHEMA, fingerprint="a", resume=True)
    with pytest.raises(RuntimeError):
        map_shards(reader, out, fn)
    out.abort()
    assert calls == [0, 5, 10]
    calls.clear()
    again = ShardWriter(tmp_path / "out.parquet", SCHEMA, fingerprint="a", resume=True)
    assert again.finished() == [0, 1]
    assert map_shards(reader, again, lambda b: [{**r, "n": r["n"] * 2} for r in b]) == {"shards": 1,
                                                                                          "shards_reused": 2}
    assert [r["n"] for r in read_rows(again.commit())] == [2 * i for i in range(15)]
    # other inputs or settings: nothing of an earlier attempt is reused
    stale = ShardWriter(tmp_path / "x.parquet", SCHEMA, fingerprint="a", resume=True, rows_per_shard=5)
    stale.write_shard(0, rows(0, 5))
    assert ShardWriter(tmp_path / "x.parquet", SCHEMA, fingerprint="b", resume=True).finished() == []


def test_kill_mid_shard_in_a_real_process_leaves_finished_shards_only(tmp_path):
    script = textwrap.dedent(f"""
        import os, pyarrow as pa
        from mathforge.store.shards import ShardWriter
        w = ShardWriter({str(tmp_path / 't.parquet')!r}, pa.schema([("id", pa.string()), ("n", pa.int64())]),
                        fingerprint="f", resume=True, rows_per_shard=4, row_group=2)
        w.write([{{"id": str(i), "n": i}} for i in range(10)])  # shards 0 and 1 done, shard 2 half written
        os.kill(os.getpid(), 9)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == -9
    staging = tmp_path / ".t.parquet.staging"
    assert any(p.name.endswith(".tmp") for p in staging.iterdir())  # the unfinished shard
    w = ShardWriter(tmp_path / "t.parquet", SCHEMA, fingerprint="f", resume=True)
    assert w.finished() == [0, 1] and not any(p.name.endswith(".tmp") for p in staging.iterdir())
    assert not (tmp_path / "t.parquet").exists()  # nothing was switched in


def test_switch_replaces_a_file_or_directory_and_recover_undoes_a_half_switch(tmp_path):
    target = tmp_path / "t.parquet"
    write_table(target, rows(0, 2), SCHEMA)
    w = ShardWriter(target, SCHEMA)
    w.write(rows(0, 3))
    w.commit()
    assert target.is_dir() and len(read_rows(target)) == 3
    write_table(target, rows(0, 1), SCHEMA)  # a single-file table may replace a shard directory again
    assert target.is_file() and read_rows(target) == rows(0, 1)
    # killed between the two renames of a switch: the old table is at .t.parquet.old and nothing at t.parquet
    target.rename(tmp_path / ".t.parquet.old")
    recover(target)
    assert read_rows(target) == rows(0, 1) and not (tmp_path / ".t.parquet.old").exists()
    staging = tmp_path / "new"
    staging.mkdir()
    write_table(staging / "part-00000.parquet", rows(5, 6), SCHEMA)
    switch_in(staging, target)
    assert target.is_dir() and not staging.exists()


def test_reader_names_the_file_of_a_bad_table(tmp_path):
    d = tmp_path / "t.parquet"
    d.mkdir()
    with pytest.raises(DataError, match="without _manifest.json"):
        ShardReader(d)
    (d / MANIFEST).write_text("{not json")
    with pytest.raises(DataError, match="garbled manifest") as err:
        ShardReader(d)
    assert str(d / MANIFEST) in str(err.value)
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(DataError, match="cannot read Parquet"):
        ShardReader(bad).num_rows


def test_rejected_writer_streams_and_replaces_only_its_stage(tmp_path):
    append_rejected(tmp_path, "load", [({"id": "a"}, "bad")])
    RejectedWriter.BATCH = 2  # several spooled batches
    try:
        with RejectedWriter(tmp_path, "curate") as w:
            w.add([({"id": f"s{i}"}, f"why {i}") for i in range(5)])
        with RejectedWriter(tmp_path, "curate") as w:  # a rerun replaces the stage's rows, never duplicates them
            w.add([({"id": f"s{i}"}, f"why {i}") for i in range(3)])
    finally:
        RejectedWriter.BATCH = 5_000
    got = read_rows(tmp_path / "rejected.parquet")
    assert [(r["stage"], r["record_id"]) for r in got] == [("load", "a"), ("curate", "s0"), ("curate", "s1"),
                                                           ("curate", "s2")]
    assert not list(tmp_path.glob(".rejected*"))
