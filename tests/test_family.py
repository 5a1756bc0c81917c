"""The arith problem family: seeded, GSM8K-shaped, disjoint splits, and the shipped files are what it makes."""

from __future__ import annotations

import pytest

from mathforge.curate.rft import RFTConfig, select_paths
from mathforge.datasets import load
from mathforge.datasets.readers import bundled_path
from mathforge.synth.family import KINDS, combinations, make_family, overlap, write_family
from mathforge.train.reference import ReferenceSFTConfig, reference_text
from mathforge.verify import check


def test_splits_are_disjoint_balanced_and_seeded():
    fam = make_family(seed=3, n_train=100, n_test=50)
    assert len(fam["train"]) == 100 and len(fam["test"]) == 50
    assert overlap(fam["train"], fam["test"]) == {"question": 0, "arithmetic": 0}
    kinds = [r["kind"] for r in fam["test"]]
    assert {k.name: kinds.count(k.name) for k in KINDS} == {k.name: 10 for k in KINDS}
    assert make_family(seed=3, n_train=100, n_test=50) == fam
    assert make_family(seed=4, n_train=100, n_test=50) != fam


def test_overlap_detects_shared_arithmetic():
    fam = make_family(seed=0, n_train=20, n_test=20)
    leaked = dict(fam["test"][0], question="reworded")
    assert overlap(fam["train"] + [leaked], fam["test"]) == {"question": 0, "arithmetic": 1}


def test_reference_solutions_are_correct_and_pass_the_step_check():
    fam = make_family(seed=0, n_train=50, n_test=50)
    for row in fam["train"]:
        gold = row["answer"].rsplit("####", 1)[1].strip()
        assert check(row["answer"], gold).correct is True
    samples = [{"id": r["id"], "problem_id": r["id"], "text": r["answer"], "correct": True} for r in fam["train"]]
    kept, dropped = select_paths(samples, RFTConfig())
    assert len(kept) == len(samples) and not dropped  # every <<a op b = c>> step evaluates right


def test_too_many_problems_for_a_kind_is_an_error():
    smallest = min(combinations().values())
    with pytest.raises(ValueError, match="number combinations"):
        make_family(n_train=smallest * len(KINDS), n_test=len(KINDS))


def test_shipped_files_are_the_generator_output(tmp_path):
    paths = write_family(tmp_path, seed=0)
    for split in ("train", "test"):
        assert paths[split].read_bytes() == bundled_path(f"arith-{split}").read_bytes()
    train = list(load("arith", "bundled:arith-train"))
    test = list(load("arith", "bundled:arith-test"))
    assert len(train) == 200 and len(test) == 300
    assert test[0].id == "arith/test/0" and test[0].meta["kind"] in {k.name for k in KINDS}
    assert not {p.question for p in train} & {p.question for p in test}
    ref = reference_text(test[0], ReferenceSFTConfig())
    assert "<<" not in ref and ref.endswith(f"The answer is {test[0].answer}.")


def test_svamp_slice_loads():
    problems = list(load("svamp", "bundled:svamp-100"))
    assert len(problems) == 100 and problems[0].id == "svamp/chal-1" and problems[0].answer == "51"
