"""Cards on disk (avatars, directory scan, lookup) and `rwkv-bot card show|import` run as a real process."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.cards import CardError, find_card, load_card_file, scan_directory
from tests.cards.builders import b64_json, charx, png_card, text_chunk, tiny_png

CARDS = Path(__file__).parent / "cards"
REPO = Path(__file__).parent.parent


def run_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bot", "card", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, env=_env())


def _env() -> dict:
    import os

    return {**os.environ, "PYTHONPATH": str(REPO), "PYTHONIOENCODING": "utf-8"}


# ----- library ------------------------------------------------------------------------------------------------


def test_text_card_takes_the_sibling_png_as_avatar(tmp_path):
    shutil.copy(CARDS / "v1.json", tmp_path / "vask.json")
    image = tiny_png()
    (tmp_path / "vask.png").write_bytes(image)
    assert load_card_file(tmp_path / "vask.json").avatar == image


def test_avatar_named_after_the_character_like_the_original_web_ui(tmp_path):
    shutil.copy(CARDS / "rwkv_webui.json", tmp_path / "baizhi.json")
    (tmp_path / "白芷-古风版.png").write_bytes(tiny_png())
    assert load_card_file(tmp_path / "baizhi.json").avatar == tiny_png()


def test_broken_sibling_avatar_is_named_in_the_error(tmp_path):
    shutil.copy(CARDS / "v1.json", tmp_path / "vask.json")
    (tmp_path / "vask.png").write_bytes(tiny_png()[:-3])
    with pytest.raises(CardError, match=r"avatar vask\.png: truncated PNG"):
        load_card_file(tmp_path / "vask.json")


def test_scan_directory_reports_bad_files_and_keeps_the_good(tmp_path):
    shutil.copy(CARDS / "v2.json", tmp_path / "sela.json")
    (tmp_path / "sela.png").write_bytes(tiny_png())  # its avatar, not a card
    (tmp_path / "toby.png").write_bytes(png_card([text_chunk("chara", b64_json({"name": "Toby"}))]))
    (tmp_path / "broken.json").write_bytes(b'{"name": ')
    (tmp_path / "list.json").write_bytes(b"[]")
    (tmp_path / "stray.png").write_bytes(tiny_png())
    (tmp_path / "notes.md").write_text("not a card")
    (tmp_path / ".hidden.json").write_text("{}")
    cards, errors = scan_directory(tmp_path)
    assert [(card.name, path.name) for card, path in cards] == [("Sela Marrow", "sela.json"), ("Toby", "toby.png")]
    assert cards[0][0].avatar == tiny_png()
    assert sorted(path.name for path, _ in errors) == ["broken.json", "list.json", "stray.png"]
    assert all(problem and "\n" not in problem for _, problem in errors)


def test_scan_missing_directory_is_an_error_not_an_exception(tmp_path):
    assert scan_directory(tmp_path / "absent") == ([], [(tmp_path / "absent", "not a directory")])


def test_scan_the_shipped_characters():
    cards, errors = scan_directory(REPO / "bot" / "cards" / "samples")
    assert errors == []
    assert {card.name for card, _ in cards} >= {"Mira", "林小满"}


def test_find_card_by_name_then_stem():
    cards = [card for card, _ in scan_directory(REPO / "bot" / "cards" / "samples")[0]]
    assert find_card(cards, "mira").name == "Mira"
    assert find_card(cards, "  MIRA ").name == "Mira"
    assert find_card(cards, "林小满").name == "林小满"
    assert find_card(cards, "xiaoman").name == "林小满"  # the file stem
    assert find_card(cards, "nobody") is None and find_card(cards, "") is None


def test_name_beats_another_cards_stem():
    from bot.cards import Card

    by_stem = Card(name="Alpha", stem="beta")
    by_name = Card(name="Beta", stem="zzz")
    assert find_card([by_stem, by_name], "beta") is by_name


# ----- CLI ----------------------------------------------------------------------------------------------------


def test_show_json_prints_exactly_one_document():
    result = run_cli("show", str(CARDS / "v2.json"), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["name"] == "Sela Marrow"
    assert json.loads(result.stdout)["system_prompt"] == "{{original}}\nYou are {{char}}. Stay curious."


def test_show_json_keeps_chinese_unescaped():
    result = run_cli("show", str(REPO / "bot" / "cards" / "samples" / "xiaoman.json"), "--json")
    assert result.returncode == 0 and "林小满" in result.stdout
    assert json.loads(result.stdout)["source_format"] == "rwkv_webui"


def test_show_png_and_charx(tmp_path):
    (tmp_path / "a.png").write_bytes(png_card([text_chunk("chara", b64_json({"name": "Pngy"}))]))
    (tmp_path / "b.charx").write_bytes(charx({"spec": "chara_card_v3", "data": {"name": "Zippy"}}))
    assert json.loads(run_cli("show", str(tmp_path / "a.png"), "--json").stdout)["name"] == "Pngy"
    assert json.loads(run_cli("show", str(tmp_path / "b.charx"), "--json").stdout)["source_format"] == "charx_v3"


def test_show_summary_without_json():
    result = run_cli("show", str(REPO / "bot" / "cards" / "samples" / "mira.json"))
    assert result.returncode == 0
    assert result.stdout.startswith("Mira (v2)\n") and "Lorebook: 4 entries" in result.stdout


@pytest.mark.parametrize("content, problem", [
    (b'[{"name": "A"}]', "list"),
    (b'{"name": 5}', "must be text"),
    (b'{"oops', "not valid JSON"),
    (b'{"name": "\xff"}', "UTF-8"),
])
def test_show_bad_file_exits_2_with_one_stderr_line(tmp_path, content, problem):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    started = time.monotonic()
    result = run_cli("show", str(path), "--json")
    assert time.monotonic() - started < 10
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and problem in result.stderr and "Traceback" not in result.stderr
    assert "bad.json" in result.stderr


def test_show_missing_file_exits_2(tmp_path):
    result = run_cli("show", str(tmp_path / "missing.png"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "does not exist" in result.stderr


def test_show_zip_bomb_exits_2_quickly(tmp_path):
    import io
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("card.json", bytes(200 * 1024 * 1024))
    (tmp_path / "bomb.charx").write_bytes(out.getvalue())
    started = time.monotonic()
    result = run_cli("show", str(tmp_path / "bomb.charx"))
    assert time.monotonic() - started < 10
    assert result.returncode == 2 and "zip bomb" in result.stderr and result.stderr.count("\n") == 1


def test_card_commands_never_import_torch_or_rwkv():
    code = (
        "import sys; from bot.cli import main; "
        f"rc = main(['card', 'show', {str(REPO / 'bot' / 'cards' / 'samples' / 'mira.json')!r}, '--json']); "
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'rwkv', 'numpy')); "
        "print('HEAVY', heavy, file=sys.stderr); sys.exit(rc or (1 if heavy else 0))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=_env(),
                            cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stderr


def test_import_copies_the_card_and_its_avatar(tmp_path):
    source = tmp_path / "incoming"
    source.mkdir()
    shutil.copy(CARDS / "v1.json", source / "vask.json")
    (source / "vask.png").write_bytes(tiny_png())
    result = run_cli("import", str(source / "vask.json"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1 and "Captain Orrin Vask" in result.stdout
    assert (tmp_path / "characters" / "vask.json").read_bytes() == (CARDS / "v1.json").read_bytes()
    assert (tmp_path / "characters" / "vask.png").read_bytes() == tiny_png()
    again = run_cli("import", str(source / "vask.json"), cwd=tmp_path)
    assert again.returncode == 0  # the same file again is harmless


def test_import_refuses_bad_files_and_writes_nothing(tmp_path):
    (tmp_path / "bad.json").write_bytes(b"[]")
    result = run_cli("import", str(tmp_path / "bad.json"), cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and result.stdout == ""
    assert not (tmp_path / "characters").exists()


def test_import_refuses_to_replace_a_different_card_or_duplicate_a_name(tmp_path):
    (tmp_path / "characters").mkdir()
    (tmp_path / "characters" / "vask.json").write_text('{"name": "Someone Else"}')
    shutil.copy(CARDS / "v1.json", tmp_path / "vask.json")
    result = run_cli("import", str(tmp_path / "vask.json"), cwd=tmp_path)
    assert result.returncode == 2 and "already exists" in result.stderr
    assert json.loads((tmp_path / "characters" / "vask.json").read_text()) == {"name": "Someone Else"}
    shutil.copy(CARDS / "v1.json", tmp_path / "other-name.json")
    (tmp_path / "characters" / "vask.json").write_bytes((CARDS / "v1.json").read_bytes())
    result = run_cli("import", str(tmp_path / "other-name.json"), cwd=tmp_path)
    assert result.returncode == 2 and "already has a character named Captain Orrin Vask" in result.stderr
    assert sorted(p.name for p in (tmp_path / "characters").iterdir()) == ["vask.json"]


def test_import_of_a_charx_copies_only_the_archive(tmp_path):
    icon = tiny_png((1, 2, 3))
    card = {"spec": "chara_card_v3", "data": {"name": "Zippy", "assets": [
        {"type": "icon", "uri": "embeded://icon.png", "name": "main", "ext": "png"}]}}
    (tmp_path / "zippy.charx").write_bytes(charx(card, {"icon.png": icon}))
    (tmp_path / "zippy.png").write_bytes(tiny_png())  # unrelated image beside it: the archive has its own icon
    result = run_cli("import", str(tmp_path / "zippy.charx"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "characters").iterdir()) == ["zippy.charx"]
    assert load_card_file(tmp_path / "characters" / "zippy.charx").avatar == icon


def test_import_goes_to_the_configured_library_without_importing_torch(tmp_path):
    library = tmp_path / "my-cards"
    (tmp_path / "bot.toml").write_text(f'[characters]\ndir = "{library}"\n')
    shutil.copy(CARDS / "v1.json", tmp_path / "vask.json")
    code = (
        "import sys; from bot.cli import main; "
        f"rc = main(['card', 'import', {str(tmp_path / 'vask.json')!r}, '--config', {str(tmp_path / 'bot.toml')!r}]); "
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'rwkv', 'numpy')); "
        "print('HEAVY', heavy, file=sys.stderr); sys.exit(rc or (1 if heavy else 0))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=_env(),
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stderr
    assert (library / "vask.json").read_bytes() == (CARDS / "v1.json").read_bytes()
