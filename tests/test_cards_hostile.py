"""Cards built to stall the bot: every scan is linear (hostile input of a size costs about what benign input of
that size costs, measured side by side), and the lorebook scan and prompt building are bounded.

The old patterns are kept here as the reference: the new code must agree with them wherever they finish.
"""
from __future__ import annotations

import json
import re
import time

import pytest
from hypothesis import given, settings, strategies as st

from bot.cards import Card, CardError, build_prompt, parse_card, render_macros, reply_preamble
from bot.cards.limits import MAX_BOOK_KEYS
from bot.cards.lorebook import key_occurs
from bot.cards.text import _HEADER, _HEADER_WORDS, _prose_kind

# ----- the reference: the patterns as they were (correct, but super-linear on hostile text) ------------------------
_OLD_HEADER = re.compile(
    rf"^[ \t]*(?:(?P<hashes>\#{{1,6}})[ \t]*)?(?:\*\*|__)?[ \t]*(?P<word>{_HEADER_WORDS})(?!\w)[ \t]*(?:\*\*|__)?[ \t]*"
    rf"(?P<colon>[:：])?[ \t]*(?:\*\*|__)?[ \t]*(?P<rest>.*)$",
    re.IGNORECASE,
)
_OLD_WPP = re.compile(r"\[\s*\w+\s*\(\s*\"[^\"\n]*\"\s*\)\s*\{|\w+\s*\(\s*\"[^\"\n]*\"(?:\s*\+\s*\"[^\"\n]*\")+\s*\)")
_OLD_PLIST = re.compile(r"\[[^\[\]\n]{1,200}?:[^\[\]]*?;[^\[\]]*\]")


def old_prose_kind(text: str) -> str:
    return "text_wpp" if _OLD_WPP.search(text) else "text_plist" if _OLD_PLIST.search(text) else "text_prose"


def old_key_occurs(needle: str, haystack: str) -> bool:
    def word(c: str) -> bool:
        return c.isascii() and (c.isalnum() or c == "_")

    start = haystack.find(needle)
    while start != -1:
        end = start + len(needle)
        if not (word(needle[0]) and start > 0 and word(haystack[start - 1])) and not (
                word(needle[-1]) and end < len(haystack) and word(haystack[end])):
            return True
        start = haystack.find(needle, start + 1)
    return False


# Small alphabets that hit every branch of the patterns.
_CARD_TEXT = st.text(alphabet='[](){}"+:;\n \tab_名#*x', max_size=60)
_HEADER_LINE = st.text(alphabet=" \t#*_:：xNnaAmMeE性格", max_size=30).map(lambda s: s.replace("x", "name", 1))


@settings(max_examples=400, deadline=None)
@given(_CARD_TEXT)
def test_card_kind_detection_agrees_with_the_old_patterns(text):
    assert _prose_kind(text) == old_prose_kind(text)


@settings(max_examples=400, deadline=None)
@given(_HEADER_LINE)
def test_header_parsing_agrees_with_the_old_pattern(line):
    old, new = _OLD_HEADER.match(line), _HEADER.match(line)
    assert (old is None) == (new is None)
    if old:
        assert old.groupdict() == {name: new[name] for name in old.groupdict()}


@settings(max_examples=600, deadline=None)
@given(st.text(alphabet="ab _-é青\x00.", min_size=1, max_size=6), st.text(alphabet="ab _-é青\x00.", max_size=30))
def test_key_matching_agrees_with_the_old_scan(needle, haystack):
    assert key_occurs(needle, haystack) == old_key_occurs(needle.replace("\x00", " "), haystack.replace("\x00", " "))


# ----- hostile input costs what benign input of the same size costs ---------------------------------------------------
def best_of(work, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def assert_linear_like_benign(hostile, benign, factor: float = 10) -> None:
    """The hostile call costs at most `factor` times the benign one (plus 0.2 ms for timer noise)."""
    benign_s = best_of(benign)
    hostile_s = best_of(hostile)
    assert hostile_s <= factor * benign_s + 0.0002, (hostile_s, benign_s)


SIZE = 4000  # where the old patterns took seconds (and minutes at the 100,000-character field limit)
BENIGN_PROSE = ("Mira keeps the lighthouse and talks to the gulls. " * (SIZE // 50 + 1))[:SIZE]


@pytest.mark.parametrize("hostile", [
    "a" * SIZE,  # W++'s word(...) tried at every position of one long word
    "[" + ":;" * (SIZE // 2),  # PList: a ':' and ';' that never close
    ("[" + "a" * 190 + ":" + ";" * 10) * (SIZE // 201),
])
def test_text_card_kind_is_linear(hostile):
    assert_linear_like_benign(lambda: parse_card(hostile.encode(), "Mira.txt"),
                              lambda: parse_card(BENIGN_PROSE.encode(), "Mira.txt"))


@pytest.mark.parametrize("line", [" " * SIZE + "x", " " * (SIZE // 2) + "**" + " " * (SIZE // 2) + "x",
                                  "name" + " " * SIZE, "######" + " " * SIZE + "x", "**" + "\t" * SIZE])
def test_text_card_headers_are_linear(line):
    benign = "Name: Mira\n" + BENIGN_PROSE
    assert_linear_like_benign(lambda: parse_card(f"Name: Mira\n{line}\n".encode(), "m.txt"),
                              lambda: parse_card(benign.encode(), "m.txt"))


def test_a_roll_macro_full_of_blanks_is_linear():
    benign = "{{roll:2d6}} " + BENIGN_PROSE
    assert_linear_like_benign(lambda: render_macros("{{roll:" + " " * SIZE + "x}}", char="M", user="U"),
                              lambda: render_macros(benign, char="M", user="U"))
    assert render_macros("{{roll: 1d1 + 2 }}", char="M", user="U") == "3"


def book_card(keys_per_entry: int, entries: int) -> Card:
    book = {"entries": [{"keys": [f"w{i}x{j}" if j % 2 else f"dark w{i} forest{j}" for j in range(keys_per_entry)],
                         "content": f"lore {i}"} for i in range(entries)], "scan_depth": 8}
    data = {"spec": "chara_card_v2", "spec_version": "2.0", "data": {"name": "M", "character_book": book}}
    return parse_card(json.dumps(data).encode(), "m.json")


def test_the_lorebook_scan_grows_linearly_with_keys_and_text():
    """Four times the keys and four times the text: about four times the work (it was sixteen: every key
    re-read every text)."""
    def scan(card, words):
        text = "the dark w3 forest of w7x1 " * words
        return lambda: reply_preamble(card, message=text, recent=[text] * 8, user="U")

    small, large = book_card(10, MAX_BOOK_KEYS // 40), book_card(10, MAX_BOOK_KEYS // 10)
    small_s, large_s = best_of(scan(small, 100)), best_of(scan(large, 400))
    assert large_s <= 8 * small_s + 0.002, (large_s, small_s)


def test_the_lorebook_fires_as_before_and_too_many_keys_are_refused():
    card = book_card(4, 10)
    note = reply_preamble(card, message="we walked into the dark w3 forest2 at dusk; w7x1!", recent=[], user="U")
    assert "[lore 3]" in note and "[lore 7]" in note and "[lore 5]" not in note
    with pytest.raises(CardError, match=f"too many keys .*the limit is {MAX_BOOK_KEYS}"):
        book_card(MAX_BOOK_KEYS // 1000 + 1, 1000)


def test_dropping_examples_tokenizes_the_prompt_a_logarithmic_number_of_times():
    blocks = 1024
    mes_example = "".join(f"<START>\n{{{{user}}}}: hello {i}\n{{{{char}}}}: hi {i}\n" for i in range(blocks))
    card = Card(name="M", description="D", first_mes="G", mes_example=mes_example)
    counted = []

    def count(text: str) -> int:
        counted.append(len(text))
        return len(text)

    full = build_prompt(card, user="U").text
    for budget in (len(full) // 3, len(full) - 1, 5):
        counted.clear()
        prompt = build_prompt(card, user="U", count_tokens=count, max_prompt_tokens=budget).text
        assert len(counted) <= blocks.bit_length() + 1, len(counted)  # it was one per dropped block
        # the same prompt as dropping one block at a time, oldest first, until it fits
        fits = next((d for d in range(blocks + 1) if len(drop_examples(full, d)) <= budget), blocks)
        assert prompt == drop_examples(full, fits)


def drop_examples(full: str, dropped: int) -> str:
    for i in range(dropped):
        full = full.replace(f"U: hello {i}\n\nM: hi {i}\n\n", "", 1)
    return full
