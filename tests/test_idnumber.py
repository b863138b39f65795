"""GB 11643 ID numbers: the check character (ISO 7064 MOD 11-2) that look-ups by ID number rely on
(pen test point 1: only a whole, valid number is ever looked up)."""

from __future__ import annotations

import datetime as dt

import pytest

from vipsense.identity.idnumber import check_character, valid_id_number

TODAY = dt.date(2026, 12, 7)


@pytest.mark.parametrize(
    "number",
    [
        "11010519491231002X",  # the standard's own example: check character X (10)
        "110101199003071233",  # the web tests' C1
    ],
)
def test_published_examples_are_valid(number):
    assert check_character(number[:17]) == number[17]
    assert valid_id_number(number, TODAY)


def test_the_check_character_of_an_old_example():
    """A published example born in 1880: its check character is right, but nobody alive was born then."""
    assert check_character("44052418800101001") == "4"
    assert not valid_id_number("440524188001010014", TODAY)


def test_every_single_wrong_character_is_caught():
    """MOD 11-2 catches any one wrong digit: a guess must be a whole, right number."""
    number = "110101199003071233"
    for i in range(18):
        for other in "0123456789X":
            if other == number[i] or (other == "X" and i < 17):
                continue
            changed = number[:i] + other + number[i + 1 :]
            assert not valid_id_number(changed, TODAY), changed


@pytest.mark.parametrize(
    "number, why",
    [
        ("11010519491231002x", "lower-case x: the caller upper-cases"),
        ("1101051949123100", "too short"),
        ("11010519491231002XX", "too long"),
        ("110105194912310 2X", "not a digit"),
        ("110105190002300011", "30 February"),
        ("110105189912310010", "born before 1900"),
        ("110105202712310010", "born in the future"),
    ],
)
def test_malformed_numbers_are_not_valid(number, why):
    if len(number) == 18 and number[:17].isdigit() and number[17] != "x":
        number = number[:17] + check_character(number[:17])  # only the named fault is left
    assert not valid_id_number(number, TODAY), why
