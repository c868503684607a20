"""The RWKV World tokenizer, read from the vocabulary file that ships inside the `rwkv` package.

Ids are those of the package's TRIE_TOKENIZER (the tests compare them on a long mixed-language text). Tokens are
byte strings and one character may span several tokens, so decoding keeps the bytes and only turns a complete
UTF-8 prefix into text.
"""
from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

TURN_END_BYTES = b"\n\n"


def vocab_path() -> Path:
    spec = importlib.util.find_spec("rwkv")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the `rwkv` package is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "rwkv_vocab_v20230424.txt"


class WorldTokenizer:
    """Greedy longest-match over the vocabulary bytes, like the package's TRIE_TOKENIZER, with a dict per length."""

    def __init__(self, path: Path | None = None):
        self.id_to_bytes: dict[int, bytes] = {}
        for line in (path or vocab_path()).read_text(encoding="utf-8").splitlines():
            idx = int(line[: line.index(" ")])
            literal = line[line.index(" ") : line.rindex(" ")]
            token = _parse_literal(literal.strip())
            self.id_to_bytes[idx] = token
        self.bytes_to_id = {b: i for i, b in self.id_to_bytes.items()}
        self.max_token_len = max(len(b) for b in self.bytes_to_id)
        # Prefixes of every token, so the longest-match scan can stop as soon as no token continues.
        self._prefixes = {b[:n] for b in self.bytes_to_id for n in range(1, len(b) + 1)}

    def encode(self, text: str) -> list[int]:
        return self.encode_bytes(text.encode("utf-8"))

    def encode_bytes(self, data: bytes) -> list[int]:
        tokens: list[int] = []
        pos, end = 0, len(data)
        prefixes, lookup = self._prefixes, self.bytes_to_id
        while pos < end:
            best_len, best_id = 0, None
            n = 1
            while pos + n <= end and n <= self.max_token_len:
                piece = data[pos : pos + n]
                if piece not in prefixes:
                    break
                token_id = lookup.get(piece)
                if token_id is not None:
                    best_len, best_id = n, token_id
                n += 1
            if best_id is None:  # every single byte is a token, so this cannot happen with the World vocab
                raise ValueError(f"byte {data[pos]:#x} has no token")
            tokens.append(best_id)
            pos += best_len
        return tokens

    def token_bytes(self, token_id: int) -> bytes:
        """Bytes of one id; ids the vocabulary lacks (a padded head can produce them) decode to nothing."""
        return self.id_to_bytes.get(token_id, b"")

    def decode_bytes(self, tokens: list[int]) -> bytes:
        return b"".join(self.token_bytes(t) for t in tokens)

    def decode(self, tokens: list[int]) -> str:
        return self.decode_bytes(tokens).decode("utf-8", errors="replace")

    def count(self, text: str) -> int:
        return len(self.encode(text))


def _parse_literal(literal: str) -> bytes:
    # The vocabulary file writes each token as a Python str or bytes literal.
    import ast

    value = ast.literal_eval(literal)
    return value.encode("utf-8") if isinstance(value, str) else value


def complete_utf8_prefix(data: bytes) -> int:
    """Length of the longest prefix of `data` that does not end inside a multi-byte UTF-8 character."""
    end = len(data)
    for back in range(1, min(4, end) + 1):
        byte = data[end - back]
        if byte & 0b1100_0000 == 0b1000_0000:
            continue  # continuation byte: keep looking for the lead byte
        if byte & 0b1000_0000 == 0:
            return end  # ASCII: complete
        need = 2 if byte >> 5 == 0b110 else 3 if byte >> 4 == 0b1110 else 4 if byte >> 3 == 0b11110 else 1
        return end if back >= need else end - back
    return end


@functools.lru_cache(maxsize=1)
def world_tokenizer() -> WorldTokenizer:
    return WorldTokenizer()
