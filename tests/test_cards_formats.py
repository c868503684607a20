"""Every card format we read, from cards we wrote, to the exact normalized card."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.cards import Card, load_card_file, parse_card
from tests.cards.builders import b64_json, charx, png_card, text_chunk, tiny_png

CARDS = Path(__file__).parent / "cards"


def normalized(**fields) -> dict:
    card = {
        "name": "", "description": "", "personality": "", "scenario": "", "first_mes": "", "mes_example": "",
        "alternate_greetings": [], "system_prompt": "", "post_history_instructions": "", "creator_notes": "",
        "tags": [], "creator": "", "character_version": "", "character_book": None, "source_format": "",
    }
    assert set(fields) <= set(card), set(fields) - set(card)
    return {**card, **fields}


def entry(**fields) -> dict:
    base = {
        "keys": [], "secondary_keys": [], "content": "", "enabled": True, "insertion_order": 0,
        "case_sensitive": False, "constant": False, "selective": False, "position": "before_char", "priority": 0,
        "name": "", "comment": "",
    }
    return {**base, **fields}


V1 = normalized(
    name="Captain Orrin Vask",
    description="{{char}} commands the airship Lark, a patched-together cargo hauler that flies the salt routes "
    "between the desert cities.",
    personality="gruff, superstitious, generous with food and stingy with praise",
    scenario="{{user}} has just signed on as the Lark's new navigator.",
    first_mes='*Vask squints at your papers, then at you.* "Navigator, is it? Last one navigated us into a '
    'sandstorm. Stow your bag, <USER>."',
    mes_example="<START>\n<USER>: Why is there a horseshoe nailed over the wheel?\n<BOT>: \"Because the last ship I "
    "flew didn't have one, and it's at the bottom of the Glass Sea.\"",
    source_format="v1",
)

V2 = normalized(
    name="Sela Marrow",
    description="{{char}} is a botanist who catalogues plants that only bloom during eclipses.",
    personality="precise, excitable about seeds, forgets to eat",
    scenario="An eclipse begins in an hour; {{user}} is helping {{char}} set up her cameras in the greenhouse.",
    first_mes='"You\'re late! No, you\'re early. Hold this." *She hands you a tripod.*',
    mes_example='<START>\n{{user}}: What are we looking for?\n{{char}}: "{{random:Moonlace,Umbral fern,Duskbell}}. '
    'Maybe. If it wakes up."',
    alternate_greetings=['*The eclipse is over. {{char}} sits on an upturned pot, grinning.* "It bloomed."', '"Shh."'],
    system_prompt="{{original}}\nYou are {{char}}. Stay curious.",
    post_history_instructions="Describe the light in every reply.",
    creator_notes="Never shown to the model.",
    tags=["science", "original"],
    creator="tests",
    character_version="2",
    character_book={
        "name": "Greenhouse",
        "entries": [
            entry(keys=["Moonlace"], content="Moonlace opens only in total darkness at noon; its petals glow faintly "
                  "blue.", insertion_order=5, name="moonlace", priority=3, comment="flower"),
            entry(keys=["greenhouse"], content="The greenhouse was built by {{char}}'s grandfather from old train "
                  "windows.", insertion_order=1, constant=True, position="after_char"),
            entry(keys=["camera"], secondary_keys=["broken", "jammed"], selective=True, insertion_order=2,
                  content="The left camera jams in the cold; tapping the lens cap twice fixes it."),
            entry(keys=["Duskbell"], case_sensitive=True, content="Duskbell is poisonous to cats.", insertion_order=3,
                  position="after_char"),
            entry(keys=["seed"], content="disabled entry", enabled=False, insertion_order=4),
        ],
    },
    source_format="v2",
)

V3 = normalized(
    name="Tobias Wren of the Seventh Lantern",
    description="{{char}} is a night-market fortune teller who is honest about making everything up.",
    first_mes="\"Cross my palm with a coin, {{user}}, and I'll lie to you beautifully.\"",
    creator_notes="English notes",
    alternate_greetings=['"Back again? The cards missed you."'],
    tags=["fortune", "night market"],
    creator="tests",
    character_version="3.1",
    source_format="v3",
)

PYGMALION = normalized(
    name="Brannoc",
    description="A retired siege golem who now runs a bakery.\nHe is very careful with eggs.",
    scenario="A quiet morning in the bakery.",
    first_mes="*Flour drifts off Brannoc's stone shoulders.* \"WELCOME. BREAD IS WARM.\"",
    mes_example="You: Is the bread fresh?\nBrannoc: \"ALL BREAD IS FRESH. I AM VERY FAST.\"",
    source_format="pygmalion",
)

OOBA_YAML = normalized(
    name="Ines",
    description="Ines runs a second-hand bookshop that only sells books with notes in the margins.\nShe reads every "
    "note before pricing a book.\n\nShe believes margins are where people are most honest.",
    first_mes="Oh! A customer. Sorry, I was reading. What can I find for you?",
    mes_example="{{user}}: Do you have anything on sailing?\n{{char}}: Three. One has a very angry sailor's notes in "
    "it. I'd start with that one.",
    source_format="ooba_yaml",
)

RWKV_WEBUI = normalized(
    name="白芷-古风版",
    description="请你阅读以下内容并扮演{{char}}，而我来扮演{{user}}。\n{{char}}是一家老药铺的年轻掌柜，心细，嘴硬心软。",
    first_mes="（药铺里飘着淡淡的艾草香，白芷正低头碾药。）\n\n\n\n{{user}}: 掌柜的在吗？\n\n（她抬起头，笑了笑。）“在呢，{{user}}，今天又哪里不舒服？”",
    mes_example="<user>: 这药苦吗？\n\n<bot>: “良药苦口。”（她往你手心里塞了一颗蜜饯。）“这个不苦。”",
    source_format="rwkv_webui",
)

CHUB_TEXT = normalized(
    name="Hollis Pike",
    description="{{char}} is a lock-keeper on a canal that nobody uses anymore.\nHe paints the lock gates every "
    "spring anyway.",
    personality="stubborn, kind, talks to ducks",
    scenario="{{user}}'s narrowboat is the first to come through in eleven years.",
    first_mes='*Hollis drops his paintbrush.* "Well. Would you look at that."',
    alternate_greetings=['*Rain on the canal. Hollis holds out an umbrella.* "You\'ll be wanting the lock, then."'],
    mes_example='<START>\n{{user}}: Why keep the lock working?\n{{char}}: "Because the day I stop, somebody\'ll '
    'come. Always the way."',
    tags=["canal", "slice of life"],
    creator="tests",
    source_format="text_sections",
)

GLOW_PROSE = normalized(
    name="青岚",
    description=(CARDS / "青岚.txt").read_text(encoding="utf-8").strip(),
    source_format="text_prose",
)
WPP = normalized(name="Kestrel", description=(CARDS / "Kestrel.txt").read_text().strip(), source_format="text_wpp")
PLIST = normalized(name="Dorrit", description=(CARDS / "Dorrit.txt").read_text().strip(), source_format="text_plist")

FIXTURES = {
    "v1.json": V1,
    "v2.json": V2,
    "v3.json": V3,
    "pygmalion.json": PYGMALION,
    "ooba.yaml": OOBA_YAML,
    "rwkv_webui.json": RWKV_WEBUI,
    "chub.txt": CHUB_TEXT,
    "青岚.txt": GLOW_PROSE,
    "Kestrel.txt": WPP,
    "Dorrit.txt": PLIST,
}


@pytest.mark.parametrize("filename", sorted(FIXTURES))
def test_each_fixture_reads_to_its_normalized_card(filename):
    card = load_card_file(CARDS / filename)
    assert card.to_json() == FIXTURES[filename]
    assert card.stem == Path(filename).stem


@pytest.mark.parametrize("filename", sorted(FIXTURES))
def test_bom_and_crlf_read_the_same(filename):
    raw = (CARDS / filename).read_bytes()
    windows = b"\xef\xbb\xbf" + raw.replace(b"\n", b"\r\n")
    assert parse_card(windows, filename).to_json() == FIXTURES[filename]


def test_crlf_inside_json_strings_becomes_lf():
    card = parse_card(json.dumps({"name": "A", "description": "one\r\ntwo\rthree"}).encode(), "a.json")
    assert card.description == "one\ntwo\rthree"  # only CRLF changes; text is otherwise kept as written


def test_v2_keeps_everything_beyond_the_normalized_json():
    card = load_card_file(CARDS / "v2.json")
    assert card.extensions == {"depth_prompt": {"depth": 4, "prompt": "kept, not used"}, "fav": False}
    book = card.character_book
    assert (book.scan_depth, book.token_budget, book.recursive_scanning) == (1, 120, True)
    assert book.description == "facts about the greenhouse" and book.extensions == {"note": 1}
    assert book.entries[1].extensions == {"x": 1}


def test_v3_specific_fields():
    card = load_card_file(CARDS / "v3.json")
    assert card.nickname == "Toby" and card.name == "Tobias Wren of the Seventh Lantern"
    assert card.display_name == "Toby"
    assert card.group_only_greetings == ['"Ah, a crowd. The cards love a crowd."']
    assert card.group_only_greetings[0] not in card.alternate_greetings
    assert card.creator_notes_multilingual == {"en": "English notes", "zh": "中文说明"}
    assert card.source == ["https://example.invalid/toby"]
    assert (card.creation_date, card.modification_date) == (1700000000, 1700000500)
    assert card.assets[0]["uri"] == "embeded://assets/icon/main.png"


def test_rwkv_webui_card_keeps_its_user_and_qa_setting_and_short_char_name():
    card = load_card_file(CARDS / "rwkv_webui.json")
    assert card.extensions == {"rwkv_webui": {"user": "阿远", "use_qa": True}}
    assert card.display_name == "白芷"  # the original UI cut {{char}} at the first '-'


def test_ooba_json_and_v1_without_optional_fields():
    ooba = parse_card(json.dumps({"name": "Q", "context": "ctx", "greeting": "hi"}).encode(), "q.json")
    assert ooba.to_json() == normalized(name="Q", description="ctx", first_mes="hi", source_format="ooba")
    bare = parse_card(b'{"name": "  Solo  "}', "solo.json")
    assert bare.to_json() == normalized(name="Solo", source_format="v1")


def test_v2_without_spec_but_with_data_object():
    card = parse_card(json.dumps({"data": {"name": "D", "first_mes": "hey"}}).encode(), "d.json")
    assert (card.name, card.first_mes, card.source_format) == ("D", "hey", "v2")


def test_text_is_not_unicode_normalized():
    decomposed = "Cafe\u0301"  # e + combining acute, not the composed é
    card = parse_card(json.dumps({"name": decomposed, "description": "\uff21"}).encode(), "x.json")
    assert card.name == decomposed and card.description == "\uff21"


def test_chub_sections_with_markdown_and_chinese_headers():
    text = "**Name:** Juniper\n## Personality\nshy\n\n性格：害羞\n场景：图书馆\n开场白：你好。\n"
    card = parse_card(text.encode(), "whatever.txt")
    assert card.name == "Juniper"
    assert card.personality == "shy\n\n害羞"
    assert (card.scenario, card.first_mes) == ("图书馆", "你好。")


def test_chub_text_without_a_name_line_takes_the_file_stem():
    card = parse_card(b"Personality: calm\nScenario: a boat\n", "Ferryman.txt")
    assert (card.name, card.personality, card.scenario) == ("Ferryman", "calm", "a boat")


def test_lines_under_the_name_line_go_to_the_description():
    card = parse_card(b"Name: Ada\nA clockmaker.\nDescription: Lives in Prague.\n", "x.txt")
    assert card.name == "Ada" and card.description == "A clockmaker.\n\nLives in Prague."


# ----- PNG cards ----------------------------------------------------------------------------------------------


def _v2_document() -> dict:
    return json.loads((CARDS / "v2.json").read_text(encoding="utf-8"))


def test_png_card_with_chara_chunk():
    image = tiny_png()
    card = parse_card(png_card([text_chunk("chara", b64_json(_v2_document()))], image=image), "sela.png")
    assert card.to_json() == {**V2, "source_format": "png_v2"}
    assert card.avatar == image  # the image without the card text
    assert card.stem == "sela"


def test_png_chunk_after_the_image_data_is_found():
    data = png_card(chunks_after_idat=[text_chunk("chara", b64_json(json.loads((CARDS / "v1.json").read_text())))])
    assert parse_card(data, "vask.png").to_json() == {**V1, "source_format": "png_v1"}


def test_ccv3_takes_precedence_over_chara_wherever_they_sit():
    v3 = json.loads((CARDS / "v3.json").read_text(encoding="utf-8"))
    data = png_card([text_chunk("chara", b64_json(_v2_document()))], [text_chunk("ccv3", b64_json(v3))])
    card = parse_card(data, "toby.png")
    assert card.to_json() == {**V3, "source_format": "png_v3"}


def test_png_chara_chunk_in_itxt_and_unpadded_base64():
    import zlib

    from tests.cards.builders import chunk

    payload = b64_json({"name": "Itxt"}).rstrip("=").encode()
    compressed = chunk(b"iTXt", b"chara\0\x01\x00\0\0" + zlib.compress(payload))
    assert parse_card(png_card([compressed]), "i.png").name == "Itxt"


def test_embed_card_round_trips_any_card_through_png():
    from bot.cards import embed_card

    original = load_card_file(CARDS / "v2.json")
    data = embed_card(tiny_png(), json.dumps(original.to_v3(), ensure_ascii=False), keyword="ccv3")
    again = parse_card(data, "v2.png")
    assert again.to_json() == {**V2, "source_format": "png_v3"}
    assert again.to_v3() == original.to_v3()


# ----- CHARX --------------------------------------------------------------------------------------------------


def test_charx_with_card_json_and_embedded_icon():
    icon = tiny_png((10, 200, 90))
    v3 = json.loads((CARDS / "v3.json").read_text(encoding="utf-8"))
    data = charx(v3, {"assets/icon/main.png": icon, "assets/other/readme.txt": b"ignored"})
    card = parse_card(data, "toby.charx")
    assert card.to_json() == {**V3, "source_format": "charx_v3"}
    assert card.avatar == icon


def test_charx_icon_that_is_not_png_leaves_no_avatar():
    v3 = json.loads((CARDS / "v3.json").read_text(encoding="utf-8"))
    card = parse_card(charx(v3, {"assets/icon/main.png": b"\xff\xd8\xff\xe0 a jpeg"}), "toby.charx")
    assert card.avatar is None and card.name.startswith("Tobias")


# ----- the normalized card itself -----------------------------------------------------------------------------


@pytest.mark.parametrize("filename", sorted(FIXTURES))
def test_to_v3_parses_back_to_the_same_card(filename):
    card = load_card_file(CARDS / filename)
    again = parse_card(json.dumps(card.to_v3(), ensure_ascii=False).encode(), filename.rsplit(".", 1)[0] + ".json")
    assert again.to_v3() == card.to_v3()
    assert again.content_hash() == card.content_hash()


def test_content_hash_is_stable_and_sensitive_to_content_and_avatar():
    first = load_card_file(CARDS / "v2.json")
    second = load_card_file(CARDS / "v2.json")
    assert first.content_hash() == second.content_hash()
    assert len(first.content_hash()) == 64
    second.description += "!"
    assert first.content_hash() != second.content_hash()
    third = load_card_file(CARDS / "v2.json")
    third.avatar = tiny_png()
    assert first.content_hash() != third.content_hash()


def test_content_hash_ignores_where_the_card_came_from():
    card = Card(name="Same", description="d")
    elsewhere = Card(name="Same", description="d", source_format="png_v2", stem="other")
    assert card.content_hash() == elsewhere.content_hash()


def test_show_json_keys_are_exactly_the_documented_ones():
    card = load_card_file(CARDS / "v2.json").to_json()
    assert list(card) == list(normalized())
    assert list(card["character_book"]) == ["name", "entries"]
    assert list(card["character_book"]["entries"][0]) == list(entry())
