"""Tokenizer, demo checkpoints, config and the CLI, through the real `rwkv` package."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from bot.config import ConfigError, load_config
from bot.engine.tokenizer import WorldTokenizer, complete_utf8_prefix, vocab_path
from tests.conftest import ROOT, run_cli, write_config

MIXED = ("The quick brown fox 跳过了懒狗。Ünïcödé façade — naïve café; Привет, мир! こんにちは世界 🙂🚀 "
         "def f(x):\n\treturn x ** 2  # code\r\n\n\n  spaces   and\ttabs 1234567890 ١٢٣ עברית العربية 한국어 ")


def test_tokenizer_ids_equal_the_packages_on_mixed_text():
    from rwkv.rwkv_tokenizer import TRIE_TOKENIZER

    ours, ref = WorldTokenizer(), TRIE_TOKENIZER(str(vocab_path()))
    text = MIXED * 200 + "".join(chr(c) for c in range(32, 3000))
    assert ours.encode(text) == ref.encode(text)
    assert ours.encode("\n\n") == [261]
    assert ours.decode(ours.encode(text)) == text


def test_partial_utf8_is_held_back():
    data = "好".encode()
    assert complete_utf8_prefix(data[:2]) == 0 and complete_utf8_prefix(data) == 3
    assert complete_utf8_prefix(b"ab" + data[:1]) == 2


def package_greedy_script(model: str, version: int) -> str:
    return textwrap.dedent(f"""
        import json, os, sys
        os.environ["RWKV_V7_ON"] = "{1 if version == 7 else 0}"
        from rwkv.model import RWKV
        from bot.engine.tokenizer import world_tokenizer
        tok = world_tokenizer()
        path = {model!r}
        model = RWKV(path[:-4] if {version} == 7 else path, "cpu fp32")  # the v7 class appends .pth itself
        out = {{}}
        for prompt in ("User: hello\\n\\nMira:", "User: the tide is out and the boats are stuck\\n\\nMira:"):
            logits, state = model.forward(tok.encode(prompt), None)
            tokens = []
            for _ in range(24):
                t = int(logits.argmax())
                tokens.append(t)
                logits, state = model.forward([t], state)
            out[prompt] = tokens
        print(json.dumps(out))
    """)


@pytest.mark.parametrize("version", [6, 7])
def test_demo_models_load_in_the_real_package_and_depend_on_input(version, demo6, demo7):
    model = str(demo6 if version == 6 else demo7)
    result = subprocess.run([sys.executable, "-c", package_greedy_script(model, version)],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    replies = list(json.loads(result.stdout.strip().splitlines()[-1]).values())
    assert replies[0] != replies[1]
    assert len(set(replies[0])) > 5  # not one token repeated


def test_rwkv6_chat_through_the_bot(tmp_path, demo6):
    config = write_config(tmp_path, demo6)
    script = "/char use Mira\n/params set temperature 0 max_tokens 10\nhello\n/undo 1\nhello\n"
    result = run_cli("chat", "--config", str(config), input=script, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    replies = [line for line in result.stdout.splitlines() if line.startswith("Mira: ") and len(line) < 200]
    assert len(replies) >= 2 and replies[-1] == replies[-2]


def test_demo_model_cli_rejects_bad_shapes(tmp_path):
    result = run_cli("demo-model", str(tmp_path / "x"), "--dim", "100")
    assert result.returncode == 2 and "multiple of 64" in result.stderr
    assert not (tmp_path / "x.pth").exists()


def test_config_file_env_and_errors(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[model]\nchunk_len = 32\n[telegram]\nadmin_ids = [1, 2]\n[sampling]\ntemperature = 0.5\n')
    config = load_config(path, env={"RWKV_BOT_MODEL_CHUNK_LEN": "16", "RWKV_BOT_DISCORD_ADMIN_ROLE_IDS": "5,6"})
    assert config.model.chunk_len == 16 and config.telegram.admin_ids == [1, 2]
    assert config.discord.admin_role_ids == [5, 6] and config.sampling_defaults.temperature == 0.5
    bad = {
        '[model]\nchunk = 3\n': "model.chunk: unknown key",
        '[modle]\npath = "x"\n': "unknown section [modle]",
        '[model]\nchunk_len = "many"\n': "model.chunk_len: must be an integer",
        '[sampling]\ntop_p = 2\n': "top_p must be a number from 0.0 to 1.0",
        '[ui]\nlang = "fr"\n': "ui.lang: must be one of en, zh",
        '[telegram]\nadmin_ids = ["x"]\n': "telegram.admin_ids: must be a list of integers",
        'model = 3\n': "model must be a table",
        '[model\n': "not valid TOML",
    }
    for text, message in bad.items():
        path.write_text(text)
        with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
            load_config(path, env={})
    with pytest.raises(ConfigError, match="RWKV_BOT_MODEL_PAHT: unknown setting"):
        load_config(None, env={"RWKV_BOT_MODEL_PAHT": "x"})


def test_bad_config_stops_the_start_with_one_line(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[model]\nmax_batch = 0\n")
    result = run_cli("chat", "--config", str(path), input="")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"rwkv-bot: config: {path}: model.max_batch: must be between 1 and 4096, got 0"]


def test_terminal_chat_undo_prints_the_same_reply_twice(tmp_path, demo7):
    """The issue's acceptance command, piped, non-tty; stdout holds only what the user should see."""
    config = write_config(tmp_path, demo7)
    script = "/char use Mira\n/params set temperature 0 max_tokens 12\nhello\n/undo 1\nhello\n"
    result = run_cli("chat", "--config", str(config), input=script, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    undo = lines.index("Took back 1 exchange.")
    assert lines[undo - 1] == lines[undo + 1] and lines[undo + 1].startswith("Mira: ")
    assert "Goose" not in result.stdout and "Loading" not in result.stdout  # the package's banners: stderr
    assert "RWKV-7" in result.stderr or "Goose" in result.stderr


def test_chat_without_a_model_makes_a_demo_model_and_says_so(tmp_path):
    # Nothing about characters configured: the samples shipped in the package serve.
    (tmp_path / "rwkv-bot.toml").write_text('[model]\nstrategy = "cpu fp32"\nbackend = "rwkv-pip"\n')
    result = run_cli("chat", input="/params set temperature 0 max_tokens 4\nhi\n", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "RANDOM-WEIGHT demo model" in result.stderr and "huggingface.co/BlinkDL" in result.stderr
    assert (tmp_path / "data" / "demo-rwkv7-L4-D256.pth").exists()
    assert any(line.startswith("Mira: ") for line in result.stdout.splitlines())
