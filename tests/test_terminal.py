"""The terminal chat as its owner uses it: the real `rwkv-bot chat` process, piped or with Ctrl-C."""
from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import time

from bot.adapters.terminal import TerminalChat
from bot.app import build_app
from bot.config import load_config
from tests.conftest import ROOT, run_cli, write_config


def chat_process(config, cwd) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RWKV_BOT_")}
    return subprocess.Popen([sys.executable, "-m", "bot", "chat", "--config", str(config)], cwd=cwd, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_terminal_commands_local_files_and_bytes_that_are_not_utf8(tmp_path, demo7):
    config = write_config(tmp_path, demo7, settings={"sampling.temperature": 0, "sampling.max_tokens": 6})
    card = tmp_path / "my cards" / "wren.json"
    card.parent.mkdir()
    card.write_text(json.dumps({"name": "Wren", "first_mes": "The lamp is lit."}), encoding="utf-8")
    script = b"\n".join([
        b"/help", b"hello \xff\xfe there \xc3", b"/export", f"/char import {card}".encode(),
        b"/char import nowhere/x.json", b"/char use Wren", b"/export", b"/replymode all", b"/quit",
        b"this line is never read"]) + b"\n"
    process = chat_process(config, tmp_path)
    out, err = process.communicate(script, timeout=120)
    stdout = out.decode("utf-8")
    assert process.returncode == 0 and b"Traceback" not in err, err.decode()[-2000:]
    footer = "Anything else you write is said to the character.\n"
    help_text, after_help = stdout[stdout.index("Commands:"):].split(footer)
    assert "/quit - leave the chat (Ctrl-D and Ctrl-C leave too)" in help_text
    assert "/char import PATH imports a card file from this computer." in help_text
    assert "/replymode" not in help_text  # a terminal has no groups
    assert after_help.startswith("Mira: ")  # the line that is not UTF-8 was read (with U+FFFD) and answered
    first, second = tmp_path / "transcript.txt", tmp_path / "transcript-1.txt"
    assert f"[file transcript.txt, {first.stat().st_size} bytes, written to {first}]" in stdout
    assert "User: hello \ufffd\ufffd there \ufffd" in first.read_text(encoding="utf-8")
    assert "Imported Wren (v1)." in stdout and "Cannot import that card: no file at nowhere/x.json" in stdout
    assert "Wren: The lamp is lit." in stdout
    assert f"[file transcript.txt, {second.stat().st_size} bytes, written to {second}]" in stdout  # never over one
    assert second.read_text(encoding="utf-8") == "Wren: The lamp is lit.\n"
    assert "Unknown command /replymode, see /help." in stdout
    assert stdout.rstrip().endswith("Bye.")  # and nothing after /quit


def test_ctrl_c_leaves_at_the_prompt_and_mid_reply(tmp_path, demo7):
    config = write_config(tmp_path, demo7, settings={"limits.shutdown_seconds": 2.0})
    idle = chat_process(config, tmp_path)
    assert idle.stdout.readline().startswith(b"Mira: ")  # the greeting: it now waits for a line
    time.sleep(0.3)
    idle.send_signal(signal.SIGINT)
    idle.wait(timeout=15)  # before: Ctrl-C waited for Enter (the line reader held the process)
    assert idle.returncode == 0 and b"Traceback" not in idle.stderr.read()

    busy = chat_process(config, tmp_path)
    busy.stdin.write(b"/params set temperature 1 mirostat_tau 0 top_p 1 max_tokens 2000\n" + b"tell me\n" * 50)
    busy.stdin.flush()
    while not (line := busy.stdout.readline()).startswith(b"Set temperature"):
        assert line, busy.stderr.read()[-2000:]
    time.sleep(0.5)  # a reply is being written
    started = time.monotonic()
    busy.send_signal(signal.SIGINT)
    out, err = busy.communicate(timeout=15)
    assert busy.returncode == 0 and time.monotonic() - started < 10 and b"Traceback" not in err
    assert out.rstrip().endswith(b"(reply cancelled)") and out.count(b"(reply cancelled)") == 1
    check = run_cli("db", "check", "--config", str(config), cwd=ROOT)
    assert check.returncode == 0 and "database consistent" in check.stdout


async def test_a_file_that_cannot_be_written_is_reported_not_a_crash(tmp_path, demo7):
    app = await build_app(load_config(write_config(tmp_path, demo7), env={}))
    try:
        out = io.StringIO()
        chat = TerminalChat(app.commands, out=out, input=io.BytesIO(b"/export\n"), files_dir=tmp_path / "missing")
        await asyncio.wait_for(chat.run(), 60)
        assert "[file transcript.txt" in out.getvalue() and "not written: No such file or directory" in out.getvalue()
    finally:
        await app.close()
