"""Property tests: parsers and the macro renderer never fail with anything but CardError, and nothing the prompt
builder emits on someone's behalf can contain a blank line inside a turn."""
from __future__ import annotations

import json
import random
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.cards import BookEntry, Card, CardError, CharacterBook, build_prompt, parse_card, render_macros, reply_preamble
from tests.cards.builders import b64_json, png_card, text_chunk

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text rich in what the parsers and macros react to: headers, colons, brackets, macros, line breaks of every kind.
_FRAGMENTS = st.sampled_from([
    "Name:", "name: ", "Personality:", "First message:", "性格：", "## Scenario", "**Name:**", "Example dialogue:",
    "{{char}}", "{{user}}", "<BOT>", "<user>", "{{", "}}", "{{random:a,b}}", "{{random::x::y}}", "{{pick:1,2,3}}",
    "{{roll:d20}}", "{{roll:2d6+1}}", "{{// hidden}}", "{{original}}", "<START>", "[", "]", "(\"", "\")", "+", ";",
    ":", "：", "\n", "\n\n", "\n\n\n", "\r\n", "\r", "\u2028", "\x85", "\t", " ", "\u3000", "Mira:", "Anon:", "\\,",
])
rich_text = st.lists(st.one_of(_FRAGMENTS, st.text(max_size=12)), max_size=30).map("".join)
names = st.one_of(st.sampled_from(["Mira", "Anon", "System", "A: B", "x\n\ny", "{{char}}", ""]), st.text(max_size=20))


def _refused_or_parsed(data: bytes, filename: str):
    try:
        return parse_card(data, filename)
    except CardError as error:
        assert str(error) and "\n" not in str(error)
        return None


@FAST
@given(text=rich_text, filename=st.sampled_from(["c.txt", "c", "Mira.txt", "青岚.txt", ".txt", "c.json", "c.yaml"]))
def test_text_parsers_only_ever_refuse_with_card_error(text, filename):
    card = _refused_or_parsed(text.encode("utf-8"), filename)
    if card is not None:
        assert card.name.strip() and "\r\n" not in card.description


@FAST
@given(data=st.binary(max_size=300), filename=st.sampled_from(["c.png", "c.charx", "c.json", "c.txt", "c.yml", "c"]))
def test_arbitrary_bytes_only_ever_refuse_with_card_error(data, filename):
    _refused_or_parsed(data, filename)


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), rich_text),
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.text(max_size=8), children, max_size=4)),
    max_leaves=12,
)
card_keys = st.sampled_from([
    "name", "description", "first_mes", "mes_example", "alternate_greetings", "tags", "character_book", "entries",
    "keys", "content", "enabled", "selective", "position", "insertion_order", "char_name", "bot", "context", "spec",
    "data", "extensions", "nickname", "assets", "creation_date", "scan_depth",
])
card_like = st.recursive(
    st.one_of(json_values, st.sampled_from(["chara_card_v2", "chara_card_v3"])),
    lambda children: st.dictionaries(card_keys, children, max_size=6),
    max_leaves=20,
)


@FAST
@given(value=card_like)
def test_card_shaped_json_only_ever_refuses_with_card_error(value):
    text = json.dumps(value, ensure_ascii=False)
    card = _refused_or_parsed(text.encode(), "c.json")
    if card is not None:
        json.dumps(card.to_json())  # the normalized card is always serializable
        assert len(card.content_hash()) == 64
    _refused_or_parsed(png_card([text_chunk("chara", b64_json(value))]), "c.png")


@FAST
@given(text=rich_text, char=names, user=names, seed=st.integers(0, 2**32))
def test_macro_renderer_never_raises_and_expands_names(text, char, user, seed):
    rendered = render_macros(text, char=char, user=user, rng=random.Random(seed))
    assert isinstance(rendered, str)
    assert render_macros(text, char=char, user=user, rng=random.Random(seed)) == rendered
    if "{" not in char + user and "<" not in char + user:
        assert not re.search(r"\{\{\s*(char|user)\s*\}\}", rendered, re.IGNORECASE) or "{{{" in text or "}}}" in text


def _turns_are_whole(text: str, labels: set[str]) -> None:
    """`text` is a run of `Label: line(s)\\n\\n` turns and nothing else."""
    assert text.endswith("\n\n") and not text.endswith("\n\n\n")
    for piece in text[:-2].split("\n\n"):
        label, colon, body = piece.partition(": ")
        assert colon and label in labels and body.strip(), (piece, labels)


@FAST
@given(greeting=rich_text, char=names.filter(str.strip), user=names, index=st.integers(0, 1), seed=st.integers(0, 99))
def test_greeting_turns_never_hold_a_blank_line(greeting, char, user, index, seed):
    card = Card(name=char.strip(), first_mes=greeting, alternate_greetings=[greeting + "\n\n{{user}}: more"])
    prompt = build_prompt(card, user=user, greeting_index=index, char_label="Assistant", user_label="User",
                          rng=random.Random(seed))
    if prompt.text.startswith("The following is a conversation"):
        return  # an empty greeting: only the fallback opening line
    _turns_are_whole(prompt.text, {"Assistant", "User"})


@FAST
@given(examples=st.lists(st.tuples(st.booleans(), rich_text), max_size=6), user=names, seed=st.integers(0, 99))
def test_example_turns_never_hold_a_blank_line(examples, user, seed):
    # Every line has a speaker; a `<START>` inside a line would legitimately start a narration block, so none.
    lines = [re.sub("<start>", "", " ".join(text.split()), flags=re.IGNORECASE) for _, text in examples]
    mes_example = "<START>\n" + "\n".join(("{{user}}: " if mine else "{{char}}: ") + line
                                          for (mine, _), line in zip(examples, lines))
    card = Card(name="Mira", mes_example=mes_example)
    text = build_prompt(card, user=user, char_label="Assistant", user_label="User", rng=random.Random(seed)).text
    if not text.startswith("The following is a conversation"):
        _turns_are_whole(text, {"Assistant", "User"})


@FAST
@given(message=rich_text, recent=st.lists(rich_text, max_size=3), contents=st.lists(rich_text, max_size=4),
       keys=st.lists(rich_text, max_size=3), phi=rich_text, char=names.filter(str.strip), user=names)
def test_preamble_is_empty_or_one_whole_note_turn(message, recent, contents, keys, phi, char, user):
    book = CharacterBook(entries=[BookEntry(keys=keys, content=c, selective=True, secondary_keys=keys[:1])
                                  for c in contents], scan_depth=2, recursive_scanning=True, token_budget=500)
    card = Card(name=char.strip(), post_history_instructions=phi, character_book=book)
    preamble = reply_preamble(card, message=message, recent=recent, user=user, rng=random.Random(0))
    if preamble:
        _turns_are_whole(preamble, {"System", "Narrator", "Note"})
        assert preamble.count("\n\n") == 1
