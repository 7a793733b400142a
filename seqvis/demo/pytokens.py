"""Per-character annotation tracks of Python source, read from Python's own `tokenize` module.

`char_tracks(source)` gives one value per character for each track:

- `token_class`: index into `TOKEN_CLASSES`. "keyword" is a hard keyword (`keyword.iskeyword`; soft keywords
  such as `match` are names); "string" is a whole literal, prefix and quotes included, and an f-string
  counts as one literal with its replacement fields (as tokenize reads it before Python 3.12, so both
  token streams give the same tracks); "indent" is the leading whitespace of a line before its first
  token; "whitespace" is everything else between tokens: spaces, newlines, blank lines, backslash
  continuations.
- `in_string`, `in_comment`: 1 inside a string literal / a comment (from `#` to the end of its line), else 0.
- `bracket_depth`: how many `(`, `[`, `{` are open at the character; a bracket counts as inside the pair it
  opens or closes, so `f(x)` reads 0 1 1 1. Brackets within strings and comments do not count.
- `indent_level`: how many indented blocks hold the character (tokenize's INDENT/DEDENT). Whitespace
  before a statement belongs to that statement; a blank or comment-only line keeps the level of the
  statement before it, as tokenize only closes blocks at the next statement.
- `column`: the character's position in its line, counted from 0 (a newline gets its line's length).

Source that tokenize rejects (unterminated strings or brackets, inconsistent dedents, stray characters)
gets "unparsed" as its token class and 0 in the other token tracks; `column` needs no tokenizer and is
always computed.
"""
from __future__ import annotations

import functools
import io
import keyword
import tokenize
from collections.abc import Iterable, Iterator

import numpy as np

TOKEN_CLASSES = ("whitespace", "indent", "keyword", "name", "number", "string", "comment", "operator", "unparsed")
TRACKS = ("token_class", "in_string", "in_comment", "bracket_depth", "indent_level", "column")
_CLASS = {name: index for index, name in enumerate(TOKEN_CLASSES)}
_CLASS_OF_TYPE = {tokenize.NUMBER: _CLASS["number"], tokenize.STRING: _CLASS["string"],
                  tokenize.COMMENT: _CLASS["comment"], tokenize.OP: _CLASS["operator"]}
_OPEN, _CLOSE = "([{", ")]}"
# Python 3.12+ splits f-strings (3.14+ also t-strings) into start, middle parts and end tokens.
_STRING_STARTS = {getattr(tokenize, name) for name in ("FSTRING_START", "TSTRING_START") if hasattr(tokenize, name)}
_STRING_ENDS = {getattr(tokenize, name) for name in ("FSTRING_END", "TSTRING_END") if hasattr(tokenize, name)}


class _Unparsable(Exception):
    """The token stream cannot be annotated (tokenize flagged an error, or a bracket closes nothing)."""


def _lines(source: str) -> list[str]:
    """`source` split after every newline character, as tokenize's readline sees it."""
    return io.StringIO(source).readlines()


def _spans(lines: list[str], line_starts: np.ndarray) -> Iterator[tuple[int, str, int, int]]:
    """(token type, text, start offset, end offset) of each token, an f-string merged into one STRING span."""
    last = len(line_starts) - 1

    def offset(row: int, col: int) -> int:
        return int(line_starts[min(row - 1, last)]) + col

    readline = functools.partial(next, iter(lines), "")
    open_strings = string_start = 0
    for token in tokenize.generate_tokens(readline):
        start, end = offset(*token.start), offset(*token.end)
        if token.type == tokenize.ERRORTOKEN or token.exact_type == tokenize.OP:  # 3.12+ passes "$" as an OP
            raise _Unparsable(f"unexpected {token.string!r} at line {token.start[0]}")
        if token.type in _STRING_STARTS:
            open_strings += 1
            string_start = start if open_strings == 1 else string_start
        elif token.type in _STRING_ENDS:
            open_strings -= 1
            if open_strings == 0:
                yield tokenize.STRING, "", string_start, end
        elif open_strings == 0:
            yield token.type, token.string, start, end


def _token_class(kind: int, text: str) -> int | None:
    if kind == tokenize.NAME:
        return _CLASS["keyword" if keyword.iskeyword(text) else "name"]
    return _CLASS_OF_TYPE.get(kind)


def _annotate(spans: Iterable[tuple[int, str, int, int]], tracks: dict[str, np.ndarray]) -> None:
    """Fill the token tracks from the spans; raises `_Unparsable` where a closing bracket closes nothing."""
    cls, depth_at, level_at = tracks["token_class"], tracks["bracket_depth"], tracks["indent_level"]
    depth = level = cursor = 0
    for kind, text, start, end in spans:
        if kind == tokenize.INDENT:
            level += 1
        elif kind == tokenize.DEDENT:
            level -= 1
        depth_at[cursor:start], level_at[cursor:start] = depth, level  # the gap before this token
        token_depth = depth
        if kind == tokenize.OP and text in _OPEN:
            depth += 1
            token_depth = depth
        elif kind == tokenize.OP and text in _CLOSE:
            if depth == 0:
                raise _Unparsable(f"{text!r} at offset {start} closes no bracket")
            depth -= 1
        depth_at[start:end], level_at[start:end] = token_depth, level
        token_class = _token_class(kind, text)
        if token_class is not None:
            cls[start:end] = token_class
        if kind == tokenize.STRING:
            tracks["in_string"][start:end] = 1
        elif kind == tokenize.COMMENT:
            tracks["in_comment"][start:end] = 1
        cursor = max(cursor, end)
    depth_at[cursor:], level_at[cursor:] = depth, level


def _mark_indents(lines: list[str], line_starts: np.ndarray, cls: np.ndarray) -> None:
    """Turn the leading whitespace of each line whose first non-blank character is in a token into "indent"."""
    for line, line_start in zip(lines, line_starts):
        first = line_start + len(line) - len(line.lstrip(" \t\f"))
        if first > line_start and first < len(cls) and cls[first] != _CLASS["whitespace"]:
            lead = cls[line_start:first]
            lead[lead == _CLASS["whitespace"]] = _CLASS["indent"]


def char_tracks(source: str) -> dict[str, np.ndarray]:
    """One int32 array per name in `TRACKS`, each `len(source)` long (see the module docstring)."""
    if not isinstance(source, str):
        raise TypeError(f"source must be a str, got {type(source).__name__}")
    lines = _lines(source)
    lengths = np.array([len(line) for line in lines], dtype=np.int64)
    line_starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    tracks = {name: np.zeros(len(source), dtype=np.int32) for name in TRACKS}
    try:
        _annotate(_spans(lines, line_starts), tracks)
        _mark_indents(lines, line_starts, tracks["token_class"])
    except (tokenize.TokenError, SyntaxError, _Unparsable):
        for values in tracks.values():
            values[:] = 0
        tracks["token_class"][:] = _CLASS["unparsed"]
    tracks["column"][:] = np.arange(len(source)) - np.repeat(line_starts[:-1], lengths)
    return tracks


def is_unparsed(tracks: dict[str, np.ndarray]) -> bool:
    """Whether `tracks` (from `char_tracks`) describe source that tokenize rejected."""
    classes = tracks["token_class"]
    return len(classes) > 0 and bool(classes[0] == _CLASS["unparsed"])


def meta_tracks(tracks: dict[str, np.ndarray]) -> dict[str, dict]:
    """`tracks` (possibly many files concatenated) as meta-track specs: discrete with labels, or scalar with range."""
    missing = [name for name in TRACKS if name not in tracks]
    if missing:
        raise ValueError(f"tracks is missing {', '.join(missing)}")

    def scalar(name: str) -> dict:
        values = tracks[name]
        return {"type": "scalar", "values": values, "range": [0, int(values.max()) if len(values) else 0]}

    return {
        "token_class": {"type": "discrete", "values": tracks["token_class"], "labels": list(TOKEN_CLASSES)},
        "in_string": {"type": "discrete", "values": tracks["in_string"], "labels": ["outside string", "in string"]},
        "in_comment": {"type": "discrete", "values": tracks["in_comment"],
                       "labels": ["outside comment", "in comment"]},
        "bracket_depth": scalar("bracket_depth"),
        "indent_level": scalar("indent_level"),
        "column": scalar("column"),
    }
