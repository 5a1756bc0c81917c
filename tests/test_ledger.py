"""Ledger keys and exactly-once storage."""

from __future__ import annotations

import threading

from mathforge.store import Ledger, request_key
from mathforge.store.ledger import SCHEMA

MSG = [{"role": "user", "content": "What is 2+2?"}]
P = {"temperature": 0.7, "top_p": 0.95, "max_tokens": 64, "seed": 0, "stop": None}


def key(**kw):
    args = dict(model="m", endpoint="e", messages=MSG, params=P, sample_index=0)
    args.update(kw)
    return request_key(**args)


def test_key_is_stable_and_content_sensitive():
    assert key() == key()
    assert key(params=dict(reversed(list(P.items())))) == key()  # order of params does not matter
    variants = {
        key(model="m2"),
        key(endpoint="e2"),
        key(messages=[{"role": "user", "content": "What is 2+3?"}]),
        key(params=dict(P, temperature=0.8)),
        key(params=dict(P, seed=1)),
        key(sample_index=1),
    }
    assert key() not in variants and len(variants) == 6


def test_record_once_and_failures(tmp_path):
    led = Ledger(tmp_path / "l.sqlite")
    led.register([("a", "t", "m", {"x": 1}), ("b", "t", "m", {"x": 2})])
    led.register([("a", "t", "m", {"x": 1})])  # idempotent
    assert led.counts() == {"pending": 2}
    led.record_ok("a", text="first", finish_reason="stop", tokens_in=3, tokens_out=4)
    led.record_ok("a", text="second", finish_reason="stop", tokens_in=3, tokens_out=4)
    assert led.get("a").text == "first"  # a stored response is never replaced
    led.record_failure("b", "HTTP 500", final=False)
    assert led.get("b").status == "pending" and led.get("b").attempts == 1
    led.record_failure("b", "HTTP 500", final=True)
    assert led.get("b").status == "failed" and led.get("b").error == "HTTP 500"
    assert led.reset_failed() == 1 and led.get("b").status == "pending"
    assert led.usage() == {"t": {"requests": 1, "tokens_in": 3, "tokens_out": 4}}
    led.close()
    # survives reopening (WAL on disk)
    led2 = Ledger(tmp_path / "l.sqlite")
    assert led2.get("a").text == "first"
    assert set(led2.get_many(["a", "b", "zz"])) == {"a", "b"}
    led2.close()


def test_answers_and_statuses_over_many_keys(tmp_path):
    """Lookups in chunks of 500 keys: every known key is found, unknown ones are absent; ``answers`` gives only the
    answered requests, with what a sample needs."""
    from mathforge.store.ledger import Answer

    led = Ledger(tmp_path / "l.sqlite")
    keys = [f"k{i:04d}" for i in range(1203)]
    led.register((k, "t", "m", {"i": i}) for i, k in enumerate(keys))  # a generator is streamed, not listed
    led.record_ok_many([(k, f"text {k}", "stop", 5, i, {"raw": i}, 0.1, 1) for i, k in enumerate(keys) if i % 3])
    led.record_failure(keys[0], "HTTP 500", final=True)
    asked = [*keys, "unknown"]
    st = led.statuses(asked)
    assert len(st) == 1203 and "unknown" not in st
    assert st[keys[0]] == "failed" and st[keys[3]] == "pending" and st[keys[1]] == "ok"
    ans = led.answers(asked)
    assert set(ans) == {k for i, k in enumerate(keys) if i % 3}
    assert ans[keys[1201]] == Answer("text k1201", "stop", 5, 1201)
    assert set(led.get_many(asked)) == set(keys)
    led.close()


def test_threads_share_one_ledger(tmp_path):
    led = Ledger(tmp_path / "l.sqlite")
    keys = [f"k{i}" for i in range(400)]
    led.register([(k, "t", "m", {}) for k in keys])

    def work(part):
        for k in part:
            led.record_ok(k, text=k, finish_reason="stop", tokens_in=1, tokens_out=1)

    threads = [threading.Thread(target=work, args=(keys[i::4],)) for i in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert led.counts() == {"ok": 400}
    led.close()


def test_ledger_from_before_the_abandoned_column_is_migrated_in_place(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite"
    old_schema = SCHEMA.replace("    abandoned INTEGER NOT NULL DEFAULT 0,\n", "")
    assert "abandoned" not in old_schema
    con = sqlite3.connect(path)
    con.executescript(old_schema)
    con.execute("INSERT INTO requests (key, teacher, model, request, status, attempts, text, created, updated) "
                "VALUES ('k1', 't', 'm', '{}', 'ok', 3, 'paid for', 0, 0)")
    con.commit()
    con.close()
    with Ledger(path) as ledger:
        row = ledger.get("k1")
        assert row.status == "ok" and row.text == "paid for" and row.attempts == 3  # nothing lost, nothing re-paid
        assert ledger.calls() == {"t": {"calls": 3, "abandoned": 0, "answers": 1}}
        ledger.record_failure("k1", "abandoned: a re-send was answered first", final=False, abandoned=1)
        row = ledger.get("k1")
        assert row.status == "ok" and row.error is None and row.attempts == 4  # the extra call is counted
        assert ledger.calls()["t"]["abandoned"] == 1
