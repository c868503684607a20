"""Every malformed or hostile file is refused with one clear CardError line, quickly and without big allocations."""
from __future__ import annotations

import io
import json
import struct
import time
import tracemalloc
import zipfile

import pytest
from hypothesis import given, settings, strategies as st

from bot.cards import CardError, load_card_file, parse_card
from bot.cards.limits import MAX_FIELD_CHARS, MAX_FILE_BYTES, MAX_TEXT_BYTES
from tests.cards.builders import b64_json, charx, chunk, png_card, text_chunk, tiny_png, with_declared_size


def refusal(data: bytes, filename: str = "card.json") -> str:
    with pytest.raises(CardError) as caught:
        parse_card(data, filename)
    message = str(caught.value)
    assert message and "\n" not in message
    return message


def js(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


# ----- JSON ---------------------------------------------------------------------------------------------------


def test_top_level_list_is_refused():
    assert "list" in refusal(js([{"name": "A"}]))
    assert "list" in refusal(js([{"name": "A"}]), "card.txt")


@pytest.mark.parametrize("value", ["just text", 42, None, True])
def test_top_level_scalar_is_refused(value):
    assert "not a character card" in refusal(js(value))


def test_missing_name_is_refused():
    assert "no character name" in refusal(js({"description": "nameless"}))
    assert "no character name" in refusal(js({"spec": "chara_card_v2", "data": {"description": "x"}}))


@pytest.mark.parametrize("name", [42, ["A"], {"first": "A"}, True])
def test_non_string_name_is_refused(name):
    assert "must be text" in refusal(js({"name": name}))
    assert "must be text" in refusal(js({"spec": "chara_card_v2", "data": {"name": name}}))


def test_blank_name_is_refused():
    assert "empty" in refusal(js({"name": "   "}))


def test_non_string_field_is_refused_with_its_name():
    assert "description" in refusal(js({"name": "A", "description": ["x"]}))
    message = refusal(js({"spec": "chara_card_v2", "data": {"name": "A", "alternate_greetings": ["ok", 5]}}))
    assert "alternate_greetings[1]" in message


def test_malformed_lorebook_is_refused():
    book = {"entries": [{"keys": ["a"], "content": "x", "enabled": "yes"}]}
    assert "enabled" in refusal(js({"spec": "chara_card_v2", "data": {"name": "A", "character_book": book}}))
    assert "character_book" in refusal(js({"spec": "chara_card_v2", "data": {"name": "A", "character_book": []}}))


def test_unknown_spec_is_refused():
    assert "unsupported card spec" in refusal(js({"spec": "chara_card_v9", "data": {"name": "A"}}))


def test_v2_without_data_is_refused():
    assert "'data'" in refusal(js({"spec": "chara_card_v2", "name": "A"}))


def test_invalid_json_names_the_position():
    message = refusal(b'{"name": "A",, }')
    assert "not valid JSON" in message and "line 1" in message


def test_invalid_utf8_is_refused():
    assert "not valid UTF-8" in refusal(b'{"name": "\xff\xfe A"}')
    assert "not valid UTF-8" in refusal(b"Name: \xc3\x28", "card.txt")


def test_utf16_is_refused_with_a_hint():
    assert "UTF-16" in refusal('{"name": "A"}'.encode("utf-16"))


def test_deeply_nested_json_is_refused():
    deep = '{"name": "A", "extensions": ' + '{"a": ' * 100_000 + "1" + "}" * 100_000 + "}"
    assert "nested too deeply" in refusal(deep.encode())
    moderately_deep = '{"name": "A", "extensions": ' + "[" * 40 + "]" * 40 + "}"
    assert "nested too deeply" in refusal(moderately_deep.encode())


def test_field_over_the_length_cap_is_refused():
    assert "too long" in refusal(js({"name": "A", "description": "x" * (MAX_FIELD_CHARS + 1)}))


def test_empty_and_blank_files_are_refused():
    assert "empty" in refusal(b"", "card.txt")
    assert "empty" in refusal(b" \n\n ", "card.json")


def test_binary_garbage_is_refused():
    refusal(bytes(range(256)) * 4, "card.txt")
    refusal(b"\x00\x01\x02 not text", "card")


# ----- size caps ----------------------------------------------------------------------------------------------


def test_oversized_bytes_are_refused_before_parsing():
    assert "too large" in refusal(b" " * (MAX_FILE_BYTES + 1), "card.png")
    assert "too large" in refusal(b'{"name": "A", "description": "' + b"x" * MAX_TEXT_BYTES + b'"}')


def test_huge_file_on_disk_is_refused_by_its_size_without_reading_it(tmp_path, monkeypatch):
    path = tmp_path / "huge.png"
    with path.open("wb") as handle:
        handle.truncate(MAX_FILE_BYTES + 1)  # sparse: no real disk use
    opened = []
    monkeypatch.setattr(type(path), "open", lambda self, *a, **k: opened.append(self) or io.BytesIO(b""))
    with pytest.raises(CardError, match="too large"):
        load_card_file(path)
    assert opened == []


def test_text_card_on_disk_is_capped_at_the_text_limit(tmp_path):
    path = tmp_path / "big.json"
    with path.open("wb") as handle:
        handle.truncate(MAX_TEXT_BYTES + 1)
    with pytest.raises(CardError, match="too large"):
        load_card_file(path)


def test_missing_file_and_directory_are_refused(tmp_path):
    with pytest.raises(CardError, match="does not exist"):
        load_card_file(tmp_path / "nope.json")
    with pytest.raises(CardError, match="not a regular file"):
        load_card_file(tmp_path)


# ----- PNG ----------------------------------------------------------------------------------------------------


def _png_card() -> bytes:
    return png_card([text_chunk("chara", b64_json({"name": "A"}))])


def test_truncated_png_is_refused():
    data = _png_card()
    for cut in (len(data) - 1, len(data) - 12, len(data) // 2, 9):
        assert "truncated PNG" in refusal(data[:cut], "a.png")


def test_corrupt_png_checksum_is_refused():
    data = bytearray(_png_card())
    position = data.find(b"chara") + 8
    data[position] ^= 0x01
    assert "bad checksum" in refusal(bytes(data), "a.png")


def test_png_without_card_chunk_is_refused():
    assert "no character data" in refusal(tiny_png(), "a.png")


def test_png_with_bad_base64_is_refused():
    assert "base64" in refusal(png_card([text_chunk("chara", "not*base64!")]), "a.png")


def test_png_whose_chunk_holds_a_list_is_refused():
    assert "list" in refusal(png_card([text_chunk("chara", b64_json([1, 2]))]), "a.png")


def test_png_with_invalid_json_inside_is_refused():
    import base64

    assert "not valid JSON" in refusal(png_card([text_chunk("chara", base64.b64encode(b"{oops").decode())]), "a.png")


def test_png_chunk_length_past_the_end_is_refused():
    bogus = b"\x7f\xff\xff\xff" + b"tEXt" + b"chara\0"
    assert "truncated PNG" in refusal(tiny_png()[:33] + bogus, "a.png")


def test_png_compressed_chunk_bomb_is_refused():
    import zlib

    bomb = zlib.compress(b"A" * (MAX_TEXT_BYTES + 10), 9)
    assert "too large" in refusal(png_card([chunk(b"zTXt", b"chara\0\0" + bomb)]), "a.png")


def test_not_a_png_named_png_is_refused():
    assert "not a PNG" in refusal(b'{"name": "A"}', "a.png")


# ----- CHARX --------------------------------------------------------------------------------------------------


def test_charx_without_card_json_is_refused():
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("readme.txt", "hello")
    assert "no card.json" in refusal(out.getvalue(), "a.charx")


def test_zip_bomb_is_refused_from_declared_sizes_without_inflating():
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("card.json", json.dumps({"spec": "chara_card_v3", "data": {"name": "A"}}))
        for index in range(3):
            archive.writestr(f"assets/pad{index}.bin", bytes(30 * 1024 * 1024))  # 30 MiB of zeros, ~30 KiB stored
    bomb = out.getvalue()
    assert len(bomb) < 1024 * 1024
    tracemalloc.start()
    started = time.perf_counter()
    message = refusal(bomb, "bomb.charx")
    elapsed = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert "zip bomb" in message
    assert elapsed < 1.0 and peak < 8 * 1024 * 1024


def test_card_json_declared_too_large_is_refused():
    data = with_declared_size(charx({"name": "A"}), "card.json", MAX_TEXT_BYTES + 1)
    assert "too large" in refusal(data, "a.charx")


def test_card_json_lying_about_its_size_is_refused():
    data = with_declared_size(charx({"name": "A", "description": "x" * 1000}), "card.json", 20)
    assert "corrupt" in refusal(data, "a.charx")


def test_truncated_zip_is_refused():
    data = charx({"name": "A"})
    assert "zip" in refusal(data[: len(data) // 2], "a.charx").lower()


def test_not_a_zip_named_charx_is_refused():
    assert "not a zip" in refusal(b"hello", "a.charx")


def test_charx_with_broken_png_icon_is_refused():
    card = {"spec": "chara_card_v3", "data": {"name": "A", "assets": [
        {"type": "icon", "uri": "embeded://icon.png", "name": "main", "ext": "png"}]}}
    assert "truncated PNG" in refusal(charx(card, {"icon.png": tiny_png()[:-5]}), "a.charx")


# ----- YAML ---------------------------------------------------------------------------------------------------


def test_yaml_alias_expansion_is_refused():
    laughs = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\nname: A\n"
    assert "aliases" in refusal(laughs.encode(), "a.yaml")


def test_yaml_python_tags_are_refused():
    assert "not valid YAML" in refusal(b"name: !!python/object/apply:os.system ['true']\n", "a.yaml")


def test_invalid_yaml_names_the_line():
    message = refusal(b"name: A\ncontext: [unclosed\n", "a.yaml")
    assert "not valid YAML" in message and "line" in message


def test_deep_yaml_is_refused():
    assert "nested too deeply" in refusal(("name: A\nx: " + "[" * 200 + "]" * 200 + "\n").encode(), "a.yml")


def test_yaml_scalar_is_refused():
    assert "not a character card" in refusal(b"just a sentence\n", "a.yaml")


# ----- damaged archives and text no encoder accepts: one CardError, never another exception --------------------
def test_a_charx_whose_central_directory_points_before_the_file_is_a_card_error():
    data = bytearray(charx({"spec": "chara_card_v3", "spec_version": "3.0", "data": {"name": "Z"}}))
    end = data.rfind(b"PK\x05\x06")
    offset = struct.unpack("<I", data[end + 16: end + 20])[0]
    data[end + 16: end + 20] = struct.pack("<I", offset + 1000)  # zipfile then seeks to -1000
    assert "CHARX archive is corrupt" in refusal(bytes(data), "z.charx")


@pytest.mark.parametrize("data, filename, problem", [
    (b'{"name": "A\\ud800"}', "a.json", "lone UTF-16 surrogate"),
    (b'{"name": "A", "description": "x\\udfffy"}', "a.json", "lone UTF-16 surrogate"),
    (b'{"name": "A", "\\ud800": 1}', "a.json", "lone UTF-16 surrogate"),
    (b'name: "A\\ud800"\n', "a.yaml", "lone UTF-16 surrogate"),
    (b'{"name": "A\\u0000B"}', "a.json", "NUL"),
])
def test_text_that_no_encoder_accepts_is_a_card_error(data, filename, problem):
    assert problem in refusal(data, filename)


def test_a_surrogate_pair_is_ordinary_text():
    assert parse_card(b'{"name": "A \\ud83d\\ude00"}', "a.json").name == "A 😀"


_CHARX = charx({"spec": "chara_card_v3", "spec_version": "3.0",
                "data": {"name": "Z", "assets": [{"type": "icon", "name": "main", "uri": "embeded://a.png"}]}},
               {"a.png": tiny_png()})


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(_CHARX) - 1), st.integers(0, 255)), min_size=1, max_size=4))
def test_a_damaged_charx_is_a_card_or_one_card_error(damage):
    data = bytearray(_CHARX)
    directory = data.find(b"PK\x01\x02")
    for position, value in damage:  # mostly into the central directory, where zipfile trusts offsets
        data[directory + position % (len(data) - directory)] = value
    try:
        parse_card(bytes(data), "z.charx")
    except CardError as error:
        assert str(error) and "\n" not in str(error)
