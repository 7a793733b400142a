"""Text to token ids: tokenizers, documents, and dictionaries in the LSTMVis "word id" line format.

Each dictionary line is `<word> <id>`. Character vocabularies contain tokens that a line format cannot hold
as-is (space, tab, newline), so seqvis writes every word escaped: a backslash becomes `\\\\`, space
`\\s`, tab `\\t`, newline `\\n`, carriage return `\\r`, and any other whitespace character
`\\uXXXX` (`\\UXXXXXXXX` above the BMP). An escaped word holds no whitespace, so `line.split()`
reads it too. LSTMVis's own dictionaries are not escaped: read those with `escaped=False`.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

_NAMED_ESCAPES = {"\\": "\\\\", " ": "\\s", "\t": "\\t", "\n": "\\n", "\r": "\\r"}
_UNESCAPE = re.compile(r"\\(?:([\\stnr])|u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8}))")
_UNESCAPED = {"\\": "\\", "s": " ", "t": "\t", "n": "\n", "r": "\r"}
_LINE = re.compile(r"(.+?)\s+(\d+)\s*")
DOCUMENT_SPLITS = ("file", "line", "blank")


def escape_word(word: str) -> str:
    """`word` with backslashes and whitespace written as escapes, so that it holds no whitespace."""
    out = []
    for char in word:
        if char in _NAMED_ESCAPES:
            out.append(_NAMED_ESCAPES[char])
        elif char.isspace():
            out.append(f"\\u{ord(char):04x}" if ord(char) <= 0xFFFF else f"\\U{ord(char):08x}")
        else:
            out.append(char)
    return "".join(out)


def unescape_word(text: str) -> str:
    """The word that `escape_word` wrote as `text`; a backslash not starting a known escape stays as it is."""
    def replace(match: re.Match) -> str:
        named, short, long = match.groups()
        return _UNESCAPED[named] if named else chr(int(short or long, 16))

    return _UNESCAPE.sub(replace, text)


def write_dict(path: str | Path, words: Iterable[str]) -> None:
    """Write `words` as "word id" lines, id = position in `words`, words escaped (see the module docstring).

    Empty words stand for unused ids and get no line, as `read_dict` reads them back.
    """
    lines = []
    for index, word in enumerate(words):
        if not isinstance(word, str):
            raise TypeError(f"words[{index}] must be a str, got {type(word).__name__}")
        if word:
            lines.append(f"{escape_word(word)} {index}\n")
    if not lines:
        raise ValueError("words holds no non-empty word to write")
    Path(path).write_text("".join(lines), encoding="utf-8")


def read_dict(path: str | Path, *, escaped: bool = True) -> list[str]:
    """The words of a "word id" file as a list indexed by id; ids absent from the file map to "" (see
    `parse_dict`). A ValueError names the file, and the line where one is wrong."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dictionary file {str(path)!r} not found")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    return parse_dict(text, str(path), escaped=escaped)


def parse_dict(text: str, name: str, *, escaped: bool = True) -> list[str]:
    """The words of "word id" lines as a list indexed by id; ids absent from them map to "".

    `escaped=False` reads LSTMVis dictionaries, whose words are raw (a word may then contain spaces; the
    id is the last field of the line; spacing around a word is dropped, a word of whitespace is kept).
    Errors are ValueErrors that start with `name` and the line number.
    """
    by_id: dict[int, str] = {}
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        match = _LINE.fullmatch(line)
        if match is None:
            raise ValueError(f"{name} line {number}: expected a 'word id' line, got {line!r}")
        word, index = match.group(1), int(match.group(2))
        if index in by_id:
            raise ValueError(f"{name} line {number}: id {index} appears twice ({by_id[index]!r} and {word!r})")
        by_id[index] = unescape_word(word) if escaped else word.strip() or word
    if not by_id:
        raise ValueError(f"{name}: the dictionary has no 'word id' lines")
    words = [""] * (max(by_id) + 1)
    for index, word in by_id.items():
        words[index] = word
    return words


class Tokenizer:
    """Splits text into characters or whitespace-separated words and maps them to the ids of a vocabulary.

    Tokens missing from the vocabulary map to "<unk>" when the vocabulary has it, else encoding fails.
    """

    KINDS = ("char", "word")

    def __init__(self, kind: str, vocab: Sequence[str]):
        if kind not in self.KINDS:
            raise ValueError(f"tokenizer kind must be one of {', '.join(self.KINDS)}, got {kind!r}")
        if isinstance(vocab, str) or not vocab or not all(isinstance(word, str) for word in vocab):
            raise ValueError("vocab must be a non-empty list of str")
        self.kind, self.vocab = kind, list(vocab)
        self._ids: dict[str, int] = {}
        for index, word in enumerate(self.vocab):
            if word:
                self._ids.setdefault(word, index)
        self.unknown = self._ids.get("<unk>")
        chars = sorted((ord(word), index) for word, index in self._ids.items() if len(word) == 1)
        self._codes = np.array([code for code, _ in chars], dtype=np.uint32)
        self._code_ids = np.array([index for _, index in chars], dtype=np.int64)

    @classmethod
    def fit(cls, kind: str, texts: Sequence[str]) -> Tokenizer:
        """A tokenizer whose vocabulary is the sorted set of tokens of `texts` (the char-rnn convention)."""
        if kind not in cls.KINDS:
            raise ValueError(f"tokenizer kind must be one of {', '.join(cls.KINDS)}, got {kind!r}")
        found: set[str] = set()
        for text in texts:
            found.update(text if kind == "char" else text.split())
        if not found:
            raise ValueError("the texts hold no tokens to build a vocabulary from")
        return cls(kind, sorted(found))

    @classmethod
    def from_file(cls, kind: str, path: str | Path) -> Tokenizer:
        """A tokenizer with the vocabulary of a "word id" dictionary file (escaped, see `read_dict`)."""
        return cls(kind, read_dict(path))

    def encode(self, text: str) -> np.ndarray:
        """The int64 ids of the tokens of `text`."""
        if self.kind == "char":
            codes = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
            if len(self._codes):
                slots = np.minimum(np.searchsorted(self._codes, codes), len(self._codes) - 1)
                known, ids = self._codes[slots] == codes, self._code_ids[slots]
            else:
                known, ids = np.zeros(len(codes), bool), np.zeros(len(codes), np.int64)
        else:
            ids = np.array([self._ids.get(word, -1) for word in text.split()], dtype=np.int64)
            known = ids >= 0
        if not known.all():
            if self.unknown is None:
                tokens = text if self.kind == "char" else text.split()
                missing = sorted({tokens[i] for i in np.flatnonzero(~known)})
                raise ValueError(f"{len(missing)} token(s) are not in the vocabulary and it has no '<unk>': "
                                 f"{', '.join(map(repr, missing[:8]))}")
            ids[~known] = self.unknown
        return ids


def split_documents(text: str, how: str) -> list[str]:
    """`text` cut into documents that concatenate back to it: one "file", each "line", or "blank"-line paragraphs."""
    if how == "file":
        return [text] if text else []
    if how == "line":
        lines = text.split("\n")
        return [line + "\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])
    if how == "blank":
        cuts = [0, *(match.end() for match in re.finditer(r"\n(?:[ \t]*\n)+", text)), len(text)]
        return [text[a:b] for a, b in zip(cuts, cuts[1:]) if b > a]
    raise ValueError(f"documents must be one of {', '.join(DOCUMENT_SPLITS)}, got {how!r}")
