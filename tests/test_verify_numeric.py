"""The exact-rational fast path and its documented policy (commas, currency, units, percent, no tolerance)."""

from fractions import Fraction

import pytest

from mathforge.verify.check import local_verdict
from mathforge.verify.normalize import canon_text, to_rational


@pytest.mark.parametrize(
    "text, value",
    [
        ("7,425,000", 7425000), ("1 000", 1000), ("10{,}000", 10000), ("900,\\!000,\\!000", 900000000),
        ("1000.0", 1000), (".4", Fraction(2, 5)), ("-5", -5), ("−5", -5), ("\\$10", 10), ("$1,000.99", Fraction(100099, 100)),
        ("1,000.99$", Fraction(100099, 100)), ("1,000.99€", Fraction(100099, 100)), ("28%", 28), ("28\\%", 28),
        ("28 percent", 28), ("90^\\circ", 90), ("17\\text{ any text}", 17), ("18 dollars", 18), ("5 cm", 5),
        ("\\frac{10}{9}", Fraction(10, 9)), ("-\\frac{10}{9}", Fraction(-10, 9)), ("\\dfrac{1}{3}", Fraction(1, 3)),
        ("\\frac12", Fraction(1, 2)), ("918\\frac{1}{2}", Fraction(1837, 2)), ("-10/9", Fraction(-10, 9)),
        ("$\\boxed{42}$", 42), ("185\\", 185),
    ],
)
def test_plain_numbers_parse_exactly(text, value):
    assert to_rational(text) == value


@pytest.mark.parametrize("text", ["5x", "5 pi", "1000,99", "32, 349", "2^{10}", "\\sqrt{2}", "1e5", "x", "", "3,5"])
def test_non_numbers_are_left_to_other_layers(text):
    assert to_rational(text) is None


@pytest.mark.parametrize(
    "pred, gold, correct",
    [
        ("1000001", "1000000", False),  # no relative tolerance
        ("10%", "1000", False),  # no x100 percent rule
        ("28", "0.28", False),  # a percent sign is a unit, not a factor
        ("28%", "28", True),
        ("5.001", "5", False),
        ("0.5", "\\frac{1}{2}", True),
        ("0.0833333333333333", "\\frac{1}{12}", True),  # correctly rounded, >= 6 significant digits
        ("0.33", "\\frac{1}{3}", False),
        ("0.125", "\\frac{1}{8}", True),
        ("0.1250001", "\\frac{1}{8}", False),  # 1/8 terminates: no rounding allowance
        ("16384.60", "16,386.16", False),
    ],
)
def test_fast_path_decides_without_a_worker(pred, gold, correct):
    v = local_verdict(pred, gold)
    assert v.correct is correct and v.method.startswith("numeric")


def test_string_layer_for_text_answers():
    v = local_verdict("so they arrive at \\boxed{4:30 \\text{ p.m.}}", "\\text{4:30 p.m.}")
    assert (v.correct, v.method, v.extractor) == (True, "string", "boxed")
    assert canon_text("\\text{Evelyn}") == canon_text("evelyn")
    assert canon_text("\\text{(C)}") == canon_text("C")
