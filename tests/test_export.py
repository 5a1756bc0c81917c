"""Export: chat and prompt-completion rows, seeded split by problem, JSONL/Parquet/DatasetDict, card, hub push."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import datasets
import pytest
from typer.testing import CliRunner

from mathforge.cli.main import app
from mathforge.errors import MathforgeError
from mathforge.export import ExportConfig, ExportStage, export, push_to_hub, split_problems
from mathforge.pipeline.context import RunContext

sys.path.insert(0, str(Path(__file__).parent))


def samples(n_problems=10, per=2):
    out = []
    for p in range(n_problems):
        for k in range(per):
            out.append({"id": f"s{p}-{k}", "problem_id": f"gsm8k/train/{p}", "question": f"What is {p} + {k}?",
                        "text": f"{p} + {k} = {p + k}\n#### {p + k}  ", "teacher": "t1" if k == 0 else "t2",
                        "model": "m1" if k == 0 else "m2", "correct": True})
    out.append({"id": "bad", "problem_id": "gsm8k/train/0", "question": "What is 0 + 0?", "text": "1",
                "teacher": "t1", "model": "m1", "correct": False})
    return out


def test_split_is_by_problem_seeded_and_never_empty_or_total():
    ids = [f"p{i}" for i in range(40)]
    held = split_problems(ids, 0.1, seed=3)
    assert len(held) == 4 and held == split_problems(list(reversed(ids)), 0.1, seed=3)
    assert held != split_problems(ids, 0.1, seed=4)
    assert len(split_problems(ids[:3], 0.01, seed=0)) == 1
    assert len(split_problems(ids[:2], 0.9, seed=0)) == 1
    assert split_problems(ids, 0.0, seed=0) == set()


def test_split_picks_the_ids_of_a_shuffled_sorted_list():
    """The split shuffles positions of the sorted unique ids (kept in Arrow, not as Python strings): the ids held out
    are those a seeded shuffle of the sorted list itself picks, so exports keep their splits."""
    import random

    rng = random.Random(7)
    ids = [f"{rng.choice(['gsm8k', 'math', 'numinamath'])}/train/{rng.randrange(10**6)}" for _ in range(3000)]
    ids += ids[:500] + ["é/1", "z/2", "Z/3", "a/10", "a/9"]  # repeats, and non-ASCII and case sorted by code point
    for seed, fraction in ((0, 0.05), (3, 0.3), (11, 0.001)):
        listed = sorted(set(ids))
        random.Random(seed).shuffle(listed)
        want = set(listed[: min(len(listed) - 1, max(1, round(fraction * len(listed))))])
        assert split_problems(ids, fraction, seed) == want


def test_export_layout_loads_with_datasets(tmp_path):
    out = tmp_path / "export"
    counts = export(samples(), out, ExportConfig(validation_fraction=0.2, system_prompt="Be careful."), seed=1)
    assert counts == {"train": {"rows": 16, "problems": 8}, "validation": {"rows": 4, "problems": 2}}
    chat = datasets.load_from_disk(str(out / "dataset" / "chat"))
    assert set(chat) == {"train", "validation"} and chat["train"].num_rows == 16
    row = chat["validation"][0]
    assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
    pid = int(row["problem_id"].rsplit("/", 1)[1])
    k = int(row["id"].rsplit("-", 1)[1])
    assert row["messages"][2]["content"] == f"{pid} + {k} = {pid + k}\n#### {pid + k}"  # stripped
    train_pids = set(chat["train"]["problem_id"])
    assert not train_pids & set(chat["validation"]["problem_id"])  # no problem in both splits
    js = datasets.load_dataset("json", data_files={"train": str(out / "completion" / "train.jsonl"),
                                                   "validation": str(out / "completion" / "validation.jsonl")})
    assert js["train"][0]["prompt"].startswith("Question: What is ") and js["train"][0]["prompt"].endswith("Answer: ")
    pq = datasets.load_dataset("parquet", data_files=str(out / "chat" / "train.parquet"))["train"]
    assert pq.num_rows == 16
    flat = [json.loads(line) for line in (out / "sft.jsonl").read_text().splitlines()]
    assert len(flat) == 20 and {r["split"] for r in flat} == {"train", "validation"}
    assert set(flat[0]) == {"id", "problem_id", "teacher", "model", "messages", "split"}


def test_card_carries_provenance_and_stage_reads_the_curate_report(tmp_path):
    ctx = RunContext(tmp_path / "run", seed=5)
    ctx.write_samples("curated", samples())
    (ctx.path("recipe.yaml")).write_text("name: run\nseed: 5\n", encoding="utf-8")
    report = {"teachers": {"t1": {"samples": 40, "correct": 20, "kept": 10, "yield": 0.25}},
              "funnel": {"records_in": 40, "steps": [{"step": "rft", "dropped": {"same-path": 7}, "left": 20}]},
              "decontam": {"ngram": 13, "benchmarks": {"gsm8k": 1319}, "hits": {"gsm8k": {"problems": 2}}}}
    ctx.path("curate.json").write_text(json.dumps(report), encoding="utf-8")
    ctx.add_file("curated", "curate-report", "curate.json")  # the export reads the report of its own lineage
    metrics = ExportStage().run(ctx, ExportConfig(formats=["jsonl"], styles=["chat"]))
    assert metrics["accepted"] == 20 and metrics["train"] + metrics["validation"] == 20
    card = ctx.path("export/README.md").read_text()
    assert "path: chat/train.jsonl" in card and "completion" not in card.split("---")[1]
    assert "| t1 | m1 | 10 |" in card and "| t1 | 40 | 20 | 10 | 25.0% |" in card
    assert "Word 13-gram overlap against: gsm8k (1,319 items)." in card and "gsm8k: problems 2" in card
    assert "| rft | same-path 7 | 20 |" in card and "seed: 5" in card and "gsm8k (20 rows)" in card
    assert not ctx.path("export/dataset").exists() and not ctx.path("export/sft.parquet").exists()


def test_push_to_hub_uploads_card_and_split_files(tmp_path, monkeypatch):
    calls = {}

    class FakeApi:
        def __init__(self, token=None):
            calls["token"] = token

        def create_repo(self, repo_id, **kw):
            calls["create"] = (repo_id, kw)
            return f"https://huggingface.co/datasets/{repo_id}"

        def upload_folder(self, **kw):
            calls["upload"] = kw

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    export(samples(), tmp_path / "e", ExportConfig())
    url = push_to_hub(tmp_path / "e", "me/math-sft", private=True)
    assert url == "https://huggingface.co/datasets/me/math-sft"
    assert calls["create"] == ("me/math-sft", {"repo_type": "dataset", "private": True, "exist_ok": True})
    assert calls["upload"]["allow_patterns"] == ["README.md", "chat/*", "completion/*"]
    assert calls["upload"]["repo_type"] == "dataset" and calls["upload"]["folder_path"] == str(tmp_path / "e")

    class Offline(FakeApi):
        def create_repo(self, repo_id, **kw):
            raise OSError("offline")

    monkeypatch.setattr(huggingface_hub, "HfApi", Offline)
    with pytest.raises(MathforgeError, match="push to hub dataset 'me/math-sft' failed: OSError: offline"):
        push_to_hub(tmp_path / "e", "me/math-sft")


def test_cli_exports_a_samples_file(tmp_path):
    src = tmp_path / "curated.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in samples()), encoding="utf-8")
    result = CliRunner().invoke(app, ["export", str(src), "--style", "completion", "-f", "jsonl", "--validation", "0.5",
                                      "--seed", "2"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "curated-export"
    assert "10 train + 10 validation rows" in result.output
    assert (out / "completion" / "validation.jsonl").exists() and not (out / "chat").exists()
    assert "Not curated by `mathforge curate`" in (out / "README.md").read_text()


def test_zero_accepted_samples_still_write_empty_sft_files(tmp_path):
    import pyarrow.parquet as pq

    from mathforge.export import ExportConfig, export

    rows = [{"id": "s1", "problem_id": "p1", "question": "q", "text": "t", "correct": False}]
    counts = export(rows, tmp_path / "export", ExportConfig(formats=["jsonl", "parquet"], card=False))
    assert counts["train"]["rows"] == 0
    assert (tmp_path / "export" / "sft.jsonl").read_text() == ""
    assert pq.read_table(tmp_path / "export" / "sft.parquet").num_rows == 0


def test_batches_rendered_ahead_in_other_processes_write_the_same_bytes(tmp_path):
    """The export's per-batch work (``export_batch.py``) through an ordered map that runs ahead on pickled copies
    (what the Ray executor's ``imap`` does), fed Arrow batches as the stage feeds it: every file byte for byte the
    in-process export of row lists. Rows are appended in batch order, so an out-of-order map would differ."""
    import pyarrow as pa
    from test_curate_compact import lookahead

    from mathforge.export import export_batches

    rows = samples(n_problems=30, per=3)
    cuts = [rows[i:i + 20] for i in range(0, len(rows), 20)]
    cfg = ExportConfig(formats=["jsonl", "parquet"], validation_fraction=0.2, system_prompt="Be careful.")

    def files(root):
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    plain = export_batches(lambda: iter(cuts), tmp_path / "plain", cfg, seed=4)
    ahead = export_batches(lambda: (pa.RecordBatch.from_pylist(c) for c in cuts), tmp_path / "ahead", cfg, seed=4,
                           imap=lookahead)
    assert plain == ahead and plain["validation"]["rows"] > 0 and len(cuts) > 2
    want = files(tmp_path / "plain")
    assert set(want) >= {"sft.jsonl", "sft.parquet", "chat/validation.parquet", "completion/train.jsonl", "README.md"}
    assert files(tmp_path / "ahead") == want

    def backwards(fn, items):
        return reversed(list(map(fn, items)))

    export_batches(lambda: iter(cuts), tmp_path / "backwards", cfg, seed=4, imap=backwards)
    assert files(tmp_path / "backwards")["sft.jsonl"] != want["sft.jsonl"]
