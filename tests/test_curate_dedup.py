"""Dedup (exact, MinHash LSH) and benchmark decontamination (word n-gram index through the loaders)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from datasketch import MinHash

from mathforge.curate.decontam import BenchmarkIndex, BenchmarkRef, DecontamConfig, build_index
from mathforge.curate.compact import cluster_roots, cluster_stats
from mathforge.curate.dedup import (
    exact_duplicates,
    near_duplicates,
    shingle_hashes,
    signatures,
)
import pyarrow.compute as pc

from mathforge.curate.ngrams import content_ids, ngram_hashes, token_ids, tokenize
from mathforge.errors import ConfigError
from mathforge.records import Problem

SOLUTION = ("Natalia sold 48/2 = 24 clips in May. Natalia sold 48 + 24 = 72 clips altogether in April and May "
            "because she sold half as many in May as she did in April, and she was very happy about it.")


def test_tokenize_and_ngrams_stay_inside_each_text():
    tokens = tokenize(["The cat, the HAT!", "", "ünïcode wörds 42"])
    assert tokens.words(0) == ["the", "cat", "the", "hat"]
    assert tokens.words(1) == [] and tokens.words(2) == ["ünïcode", "wörds", "42"]
    ids = token_ids(tokens, pc.unique(tokens.flat))
    h, doc, start = ngram_hashes(ids, tokens.offsets, 3)
    assert list(doc) == [0, 0, 2] and list(start) == [0, 1, 0]
    assert h[0] != h[1]  # "the cat the" vs "cat the hat"
    ids[1] = -1  # an unknown token breaks every n-gram that contains it
    assert list(ngram_hashes(ids, tokens.offsets, 3)[1]) == [2]
    picked = tokens.select(np.array([2, 0]))
    assert picked.words(0) == ["ünïcode", "wörds", "42"] and picked.words(1) == ["the", "cat", "the", "hat"]


def test_signatures_equal_datasketch_minhash():
    texts = [SOLUTION, "a b", "", "one two three four"]
    hashes, offsets = shingle_hashes(tokenize(texts), 3)
    sigs = signatures(texts, shingle=3, num_perm=64, seed=7)
    for i in range(len(texts)):
        m = MinHash(num_perm=64, seed=7, hashfunc=lambda x: x)
        m.update_batch([int(x) for x in hashes[offsets[i] : offsets[i + 1]]])
        assert np.array_equal(m.hashvalues, sigs[i]), i
    assert offsets[2] == offsets[3]  # the empty text has no shingles and keeps the empty signature
    # signatures depend on the text only, not on the batch it was computed in
    assert np.array_equal(signatures(["zzz " + SOLUTION, SOLUTION], num_perm=64, seed=7)[1], sigs[0])
    assert np.array_equal(content_ids(tokenize(["b a"])), content_ids(tokenize(["x a b"]))[[2, 1]])


def test_exact_duplicates_ignore_case_and_spacing_within_groups():
    texts = ["A  b c", "a b c", "a b c", "other", "a b c"]
    assert exact_duplicates(texts) == [None, 0, 0, None, 0]
    assert exact_duplicates(texts, groups=["p", "p", "q", "q", "q"]) == [None, 0, None, None, 2]
    assert exact_duplicates(texts, skip=[True, False, False, False, False]) == [None, None, 1, None, 1]


def test_near_duplicates_found_and_unrelated_texts_kept():
    edited = SOLUTION.replace("very happy", "quite happy")
    other = "Weng earns 12/60 = 0.2 dollars per minute, so for 50 minutes of babysitting she earned 0.2 x 50 = 10."
    texts = [SOLUTION, other, edited, SOLUTION + " Done."]
    found = near_duplicates(signatures(texts), 0.8)
    assert found[0] is None and found[1] is None
    assert found[2][0] == 0 and found[2][1] >= 0.8
    assert found[3][0] == 0
    assert cluster_stats(_links(found)) == {"clusters": 1, "largest": 3, "duplicates": 2}
    in_groups = near_duplicates(signatures(texts), 0.8, groups=["p", "p", "q", "p"])
    assert in_groups[2] is None and in_groups[3][0] == 0


def _bench() -> list[tuple[str, Problem]]:
    return [
        ("gsm8k", Problem("gsm8k/test/0", "Janet's ducks lay 16 eggs per day. She eats three for breakfast every "
                          "morning and bakes muffins for her friends every day with four. How much does she make?",
                          "18", "Janet sells 16 - 3 - 4 = 9 duck eggs a day. She makes 9 * 2 = $18 every day at the "
                          "farmer's market.\n#### 18")),
        ("math", Problem("math/test/1", "Compute $\\dbinom{8}{6}$.", "28")),
        ("math", Problem("math/test/2", "What is the sum of all the roots of x^2 - 5x + 6?", "5")),
    ]


def test_index_finds_verbatim_and_lightly_edited_leaks_with_item_and_ngram():
    index = BenchmarkIndex.build(_bench(), n=13, min_tokens=8)
    verbatim = "JANET'S ducks lay 16 eggs per day.  She eats three for breakfast every morning and bakes muffins " \
               "for her friends every day with four. How much does she make?"
    edited = "Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins for " \
             "her neighbours every day with four. How much money does she make?"
    hits = index.find([verbatim, edited, "Tom has 3 apples and buys 4 more. How many apples?"], whole=True)
    assert hits[0].benchmark == "gsm8k" and hits[0].item_id == "gsm8k/test/0" and hits[0].field == "question"
    assert hits[0].ngram == "janet s ducks lay 16 eggs per day she eats three for breakfast"
    assert hits[1].item_id == "gsm8k/test/0"
    assert hits[2] is None
    assert "gsm8k gsm8k/test/0 (question)" in hits[1].reason("problem")


def test_index_matches_solutions_and_short_items():
    index = BenchmarkIndex.build(_bench(), n=13, min_tokens=8)
    copied = "So she sells 16 - 3 - 4 = 9 duck eggs a day. She makes 9 * 2 = $18 every day at the market."
    short_inside = "Quick one: what is the sum of all the roots of x^2 - 5x + 6? Explain."
    hits = index.find([copied, short_inside, "Compute $\\dbinom{8}{6}$.", "Compute $\\dbinom{8}{6}$ twice."],
                      whole=True)
    assert hits[0].field == "solution" and hits[0].item_id == "gsm8k/test/0"
    assert hits[1].item_id == "math/test/2"  # 11 words < 13: indexed whole, found inside a longer text
    assert hits[2].item_id == "math/test/1"  # 4 words: only an exact whole match
    assert hits[3] is None
    assert BenchmarkIndex.build(_bench(), fields=["question"]).find([copied]) == [None]


def test_index_loads_benchmarks_through_the_loaders(tmp_path):
    path = tmp_path / "test.jsonl"
    rows = [{"question": q.question, "answer": q.solution} for _, q in _bench()[:1]]
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    index = build_index(DecontamConfig(benchmarks=[BenchmarkRef(name="gsm8k", path=str(tmp_path))]))
    assert index.sizes == {"gsm8k": 1} and len(index) == 2
    with pytest.raises(ConfigError, match="decontamination benchmark 'gsm8k'"):
        build_index(DecontamConfig(benchmarks=[BenchmarkRef(name="gsm8k", path=str(tmp_path / "nope"))]))


def test_near_duplicate_clusters_are_connected_components():
    words = [f"w{i}" for i in range(100)]
    start, end = [f"x{i}" for i in range(8)], [f"y{i}" for i in range(8)]
    a = " ".join(words)
    b = " ".join(start + words[8:])  # 8 words changed at the start: Jaccard 0.85 with a
    c = " ".join(start + words[8:-8] + end)  # and 8 at the end: 0.85 with b, 0.72 with a
    sigs = signatures([a, b, c], num_perm=512)  # tight estimates: ~0.02 standard error
    assert (sigs[0] == sigs[2]).mean() < 0.8 <= (sigs[1] == sigs[2]).mean()
    found = near_duplicates(sigs, 0.8)
    assert found[1][0] == 0 and found[2][0] == 1
    assert cluster_roots(_links(found)).tolist() == [0, 0, 0]


def test_banded_lsh_finds_what_datasketch_minhashlsh_finds(tmp_path):
    """The sorted-key band index returns the same candidates as datasketch's MinHashLSH at the same (b, r)."""
    import random

    from datasketch import LeanMinHash, MinHashLSH

    from mathforge.curate.dedup import LSH_MARGIN, SignatureStore, lsh_params

    rng = random.Random(3)
    vocab = [f"w{i}" for i in range(400)]
    base = [[rng.choice(vocab) for _ in range(80)] for _ in range(60)]
    texts = []
    for words in base:  # each text, and two edited copies of it at a few edit distances
        texts.append(" ".join(words))
        for edits in (1, 4):
            copy = list(words)
            for _ in range(edits):
                copy[rng.randrange(len(copy))] = rng.choice(vocab)
            texts.append(" ".join(copy))
    rng.shuffle(texts)
    sigs = signatures(texts)
    got = near_duplicates(sigs, 0.8)
    lsh = MinHashLSH(threshold=0.8 - LSH_MARGIN, num_perm=128)
    assert (lsh.b, lsh.r) == lsh_params(0.8, 128)
    want: list = [None] * len(texts)
    for i, sig in enumerate(sigs):
        m = LeanMinHash(seed=1, hashvalues=sig, scheme="affine32")
        best = None
        for c in sorted(lsh.query(m)):
            j = float(np.count_nonzero(sigs[c] == sig)) / 128
            if j >= 0.8 and (best is None or j > best[1]):
                best = (c, j)
        lsh.insert(i, m, check_duplication=False)
        want[i] = best
    assert got == want and sum(h is not None for h in got) > 40
    store = SignatureStore(tmp_path / "s.sig", 128)
    for lo in range(0, len(sigs), 50):  # the on-disk store, appended batch by batch, gives the same answer
        store.append(sigs[lo:lo + 50])
    assert near_duplicates(store, 0.8) == want
    store.close()


def _links(found: list) -> np.ndarray:
    """near_duplicates' hits as the cluster helpers' links (-1: duplicates nothing)."""
    return np.array([-1 if h is None else h[0] for h in found])
