"""What a new owner meets when starting the bot: every wrong setting is one line naming it, the module runs as
`python -m bot.cli`, a piped log stays readable, and counts read as English."""
from __future__ import annotations

import os
import subprocess
import sys

from bot.i18n import MESSAGES, t
from tests.conftest import CHARACTERS, ROOT, run_cli, write_config


def error_line(result) -> str:
    """The one `rwkv-bot:` line a refused start prints (log lines before it are allowed)."""
    assert result.returncode == 2, (result.stdout, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("rwkv-bot:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_python_m_bot_cli_runs_the_cli():
    result = subprocess.run([sys.executable, "-m", "bot.cli", "--help"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120, env={k: v for k, v in os.environ.items() if not k.startswith("RWKV_BOT_")})
    assert result.returncode == 0 and "usage: rwkv-bot" in result.stdout


def test_model_paths_are_reported_as_written(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "rwkv7-g1.pth").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not a model")
    cases = {
        str(tmp_path / "models"): f"model path {tmp_path / 'models'} is a directory: name the checkpoint file in "
                                  "it; it holds rwkv7-g1.pth",
        str(tmp_path / "model.bin"): f"model file not found: {tmp_path / 'model.bin'} (nor model.bin.pth)",
        str(tmp_path / "gone.pth"): f"model file not found: {tmp_path / 'gone.pth'}",
        str(tmp_path / "notes.txt"): f"cannot read model file {tmp_path / 'notes.txt'}:",
    }
    for path, expected in cases.items():
        config = write_config(tmp_path / "run", tmp_path / "x.pth", backend="batched", settings={"model.path": path})
        line = error_line(run_cli("chat", "--config", str(config), cwd=tmp_path, input=""))
        assert expected in line, line
        assert ".pth.pth" not in line and "notes.txt.pth" not in line


def test_character_settings_that_name_nothing_stop_the_start_in_one_line(tmp_path, demo7):
    config = write_config(tmp_path, demo7, settings={"characters.default": "Nobody"})
    line = error_line(run_cli("chat", "--config", str(config), cwd=tmp_path, input=""))
    assert "characters.default 'Nobody' names no card" in line and "Mira" in line

    config = write_config(tmp_path, demo7, settings={"characters.dir": str(tmp_path / "my-cards")})
    line = error_line(run_cli("chat", "--config", str(config), cwd=tmp_path, input=""))
    assert f"characters.dir {tmp_path / 'my-cards'}: not a directory" in line

    config = write_config(tmp_path, demo7)
    result = run_cli("chat", "--config", str(config), "--character", "Nobody", cwd=tmp_path, input="hello\n")
    line = error_line(result)
    assert "no character named 'Nobody'" in line and "Mira" in line and result.stdout == ""


def test_loading_progress_in_a_piped_log_is_one_line_per_stage(tmp_path, demo7):
    config = write_config(tmp_path, demo7, backend="batched", settings={"characters.dir": str(CHARACTERS)})
    result = run_cli("chat", "--config", str(config), cwd=tmp_path, input="")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "\r" not in result.stderr
    stages = [line for line in result.stderr.splitlines() if "loading model: " in line]
    assert len(stages) >= 3 and all(line.split("loading model: ")[1].strip() for line in stages), result.stderr


def test_counts_read_as_english():
    assert t("undo_done", "en", count=1) == "Took back 1 exchange."
    assert t("undo_done", "en", count=2) == "Took back 2 exchanges."
    one = t("debug_summary", "en", tokens=1, turns=1)
    assert "1 token " in one and "1 exchange " in one
    assert "3 exchanges" in t("debug_summary", "en", tokens=9, turns=3)
    assert t("undo_done", "zh", count=1) == "已撤回 1 轮对话。"
    for key, entry in MESSAGES.items():
        assert "(s)" not in entry["en"], key


def test_a_checkpoint_without_the_pth_suffix_is_served_as_named(tmp_path, demo7):
    import shutil

    named = tmp_path / "model.ckpt"
    shutil.copy(demo7, named)
    batched = write_config(tmp_path / "b", named, backend="batched")
    result = run_cli("chat", "--config", str(batched), cwd=tmp_path, input="/params set max_tokens 2\nhi\n")
    assert result.returncode == 0 and "model.ckpt" in result.stderr, result.stderr[-2000:]
    package = write_config(tmp_path / "p", named, backend="rwkv-pip")  # the package itself appends .pth for RWKV-7
    line = error_line(run_cli("chat", "--config", str(package), cwd=tmp_path, input=""))
    assert f"only from .pth files: rename {named}" in line
