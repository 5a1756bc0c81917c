"""Problem parsing, well-formedness checks, passage chunking and the pseudo-gold vote, without any model."""

from __future__ import annotations

import pytest

from mathforge.errors import DataError
from mathforge.records import Problem
from mathforge.synth.checks import malformed, parse_problem
from mathforge.synth.filters import duplicate_reasons
from mathforge.synth.passages import Passage, chunk_passages, read_passages
from mathforge.synth.prompts import LEVELS, METHODS, passage_messages, seed_messages
from mathforge.synth.pseudo import pseudo_gold
from mathforge.synth.stage import SynthesizeConfig
from mathforge.synth.synthesize import plan_candidates


@pytest.mark.parametrize(
    "reply, problem",
    [
        ("Problem: A cat has 3 kittens. How many?", "A cat has 3 kittens. How many?"),
        ("Sure!\n**New Problem:** A cat has 3 kittens. How many?\n\n**Solution:** 3", "A cat has 3 kittens. How many?"),
        ("A cat has 3 kittens. How many?\nAnswer: 3", "A cat has 3 kittens. How many?"),
        ("Problem 1: Find $x$ if $2x = 4$.\nSteps: divide", "Find $x$ if $2x = 4$."),
    ],
)
def test_parse_problem(reply, problem):
    assert parse_problem(reply) == problem


@pytest.mark.parametrize(
    "problem, reason",
    [
        ("What is 2+2?", "fewer than 30"),
        ("x" * 40 + " what?", None),
        ("Prove that there are infinitely many primes, for all n.", "proof"),
        ("A farmer has twelve cows and sells four of them.", "asks nothing"),
        ("How many cows are left if 12 - 4? The answer is 8.", "states its own answer"),
        ("Compute \\frac{1}{2 + \\frac{1}{3} for the ratio.", "unbalanced"),
        ("<the new problem> with some padding text to be long?", "placeholder"),
        ("A pen costs $3 and a book costs $12. How much do 2 pens cost?", None),
    ],
)
def test_malformed(problem, reason):
    got = malformed(problem, min_chars=30, max_chars=300)
    assert got is None if reason is None else reason in got


def test_passages_are_read_chunked_and_accounted_for(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("First passage about primes. " * 10 + "\n\nshort\n\n\n" + "Second passage on graphs. " * 3)
    passages = read_passages(text)
    assert [p.id for p in passages] == ["notes/0", "notes/1", "notes/2"]
    chunks, rejects = chunk_passages(passages, max_chars=120, min_chars=20)
    assert [c.id for c in chunks][:3] == ["notes/0#0", "notes/0#1", "notes/0#2"]
    assert all(len(c.text) <= 120 for c in chunks)
    assert [(p.id, r.split(":")[0]) for p, r in rejects] == [("notes/1", "passage too short")]
    joined = " ".join(c.text for c in chunks if c.id.startswith("notes/0"))
    assert joined.split() == passages[0].text.split()  # nothing of a long passage is lost
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"text": "ok"}\n{"body": "no text field"}\n')
    with pytest.raises(DataError, match="line 2"):
        read_passages(bad)


def test_vote_agreement_ties_and_unsolvable():
    assert pseudo_gold(["The answer is 1/2.", "The answer is 0.5.", "The answer is 3."]).reject_reason(0.6) is None
    assert pseudo_gold(["The answer is 4.", "The answer is 5."]).reject_reason(0.5).startswith("tied-vote")
    assert pseudo_gold(["I am not sure.", None]).reject_reason(0.5).startswith("unsolved")
    gold = pseudo_gold(["The answer is cannot be determined.", "The answer is cannot be determined."])
    assert gold.reject_reason(0.5).startswith("unsolvable")
    assert pseudo_gold(["The answer is 4.", None, None]).reject_reason(0.5).startswith("low-agreement: 1 of 3")


def test_dedup_names_the_seed_or_the_earlier_problem():
    seeds = [("s/1", "Tom has 4 apples and buys 3 more apples at the store. How many apples does he have now?")]
    texts = [seeds[0][1].upper(), "A bus carries 30 people and 12 get off at the first stop. How many remain on it?",
             "A bus carries 30 people and 12 get off at the first stop. How many remain on it now?"]
    reasons = duplicate_reasons(texts, ["a", "b", "c"], seeds, 0.5)
    assert reasons[0] == "duplicate: same text as seed s/1" and reasons[1] is None
    assert reasons[2].startswith("near-duplicate: of new problem b")


def test_every_level_and_method_has_a_prompt_and_candidates_have_stable_ids():
    for level in LEVELS:
        assert LEVELS[level].audience in seed_messages("q?", "rewrite", level)[0]["content"]
        assert "Math text:" in passage_messages("text", level)[1]["content"]
    for method in METHODS:
        assert METHODS[method] in seed_messages("q?", method, "college")[1]["content"]
    cfg = SynthesizeConfig(levels=["college", "competition"], methods=["add_step"], per_seed=2,
                           decontam={"enabled": False})
    cands = plan_candidates([Problem("s/1", "q?")], [Passage("t/0", "text")], cfg)
    assert [c.id for c in cands] == [
        "synth:s/1:add_step:college:0", "synth:s/1:add_step:college:1",
        "synth:s/1:add_step:competition:0", "synth:s/1:add_step:competition:1",
        "synth:t/0:from_text:college:0", "synth:t/0:from_text:competition:0",
    ]
