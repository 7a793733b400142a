"""Per-character annotation tracks of Python source, read from Python's own `tokenize` module.

`char_tracks(source)` gives one int32 value per character for each track in `TRACKS`:

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
raises `UnparsableSource`. `meta_tracks` turns the exact values into discrete, labelled tracks for a
project: the depth and the level clipped at a top value ("4+"), the column in bands ("16-31"), all
ordered, so a concept such as "bracket depth >= 2" is the set of values >= 2.
"""
from __future__ import annotations

import functools
import io
import keyword
import tokenize
from collections.abc import Iterable, Iterator

import numpy as np

TOKEN_CLASSES = ("whitespace", "indent", "keyword", "name", "number", "string", "comment", "operator")
TRACKS = ("token_class", "in_string", "in_comment", "bracket_depth", "indent_level", "column")
DEPTH_TOP, LEVEL_TOP = 4, 6  # meta_tracks clips bracket depth and indentation level here ("4+", "6+")
COLUMN_BANDS = (0, 1, 4, 8, 16, 32, 48, 64, 72, 80)  # the first column of each band of meta_tracks' "column"
_CLASS = {name: index for index, name in enumerate(TOKEN_CLASSES)}
_CLASS_OF_TYPE = {tokenize.NUMBER: _CLASS["number"], tokenize.STRING: _CLASS["string"],
                  tokenize.COMMENT: _CLASS["comment"], tokenize.OP: _CLASS["operator"]}
_OPEN, _CLOSE = "([{", ")]}"
# Python 3.12+ splits f-strings (3.14+ also t-strings) into start, middle parts and end tokens.
_STRING_STARTS = {getattr(tokenize, name) for name in ("FSTRING_START", "TSTRING_START") if hasattr(tokenize, name)}
_STRING_ENDS = {getattr(tokenize, name) for name in ("FSTRING_END", "TSTRING_END") if hasattr(tokenize, name)}


class UnparsableSource(ValueError):
    """Python's tokenize rejects the source, or a closing bracket in it closes nothing."""


def _lines(source: str) -> list[str]:
    """`source` split after every newline character, as tokenize's readline sees it."""
    return io.StringIO(source).readlines()


def _spans(lines: list[str], line_starts: np.ndarray) -> Iterator[tuple[int, str, int, int, int]]:
    """(token type, text, start offset, end offset, line) of each token, an f-string merged into one STRING."""
    last = len(line_starts) - 1

    def offset(row: int, col: int) -> int:
        return int(line_starts[min(row - 1, last)]) + col

    readline = functools.partial(next, iter(lines), "")
    open_strings = string_start = 0
    for token in tokenize.generate_tokens(readline):
        start, end, row = offset(*token.start), offset(*token.end), token.start[0]
        if token.type == tokenize.ERRORTOKEN and token.string.isspace():
            continue  # before 3.12, the blank before a stray character; the character itself comes next
        if token.type == tokenize.ERRORTOKEN or token.exact_type == tokenize.OP:  # 3.12+ passes "$" as an OP
            raise UnparsableSource(f"unexpected {token.string!r} at line {row}")
        if token.type in _STRING_STARTS:
            open_strings += 1
            string_start = start if open_strings == 1 else string_start
        elif token.type in _STRING_ENDS:
            open_strings -= 1
            if open_strings == 0:
                yield tokenize.STRING, "", string_start, end, row
        elif open_strings == 0:
            yield token.type, token.string, start, end, row


def _token_class(kind: int, text: str) -> int | None:
    if kind == tokenize.NAME:
        return _CLASS["keyword" if keyword.iskeyword(text) else "name"]
    return _CLASS_OF_TYPE.get(kind)


def _annotate(spans: Iterable[tuple[int, str, int, int, int]], tracks: dict[str, np.ndarray]) -> None:
    """Fill the token tracks from the spans; raises `UnparsableSource` where a closing bracket closes nothing."""
    cls, depth_at, level_at = tracks["token_class"], tracks["bracket_depth"], tracks["indent_level"]
    depth = level = cursor = 0
    for kind, text, start, end, row in spans:
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
                raise UnparsableSource(f"{text!r} at line {row} closes no bracket")
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
    """One int32 array per name in `TRACKS`, each `len(source)` long (see the module docstring).

    Raises `UnparsableSource` for source that tokenize rejects.
    """
    if not isinstance(source, str):
        raise TypeError(f"source must be a str, got {type(source).__name__}")
    lines = _lines(source)
    lengths = np.array([len(line) for line in lines], dtype=np.int64)
    line_starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    tracks = {name: np.zeros(len(source), dtype=np.int32) for name in TRACKS}
    try:
        _annotate(_spans(lines, line_starts), tracks)
    except tokenize.TokenError as error:  # args: (message, (line, column))
        raise UnparsableSource(f"{error.args[0]} at line {error.args[1][0]}") from None
    except SyntaxError as error:  # an IndentationError for a dedent to no outer level
        raise UnparsableSource(f"{error.msg} at line {error.lineno}") from None
    _mark_indents(lines, line_starts, tracks["token_class"])
    tracks["column"][:] = np.arange(len(source)) - np.repeat(line_starts[:-1], lengths)
    return tracks


def _ordinal_labels(top: int) -> list[str]:
    return [*map(str, range(top)), f"{top}+"]


def _band_labels(bands: tuple[int, ...]) -> list[str]:
    labels = [str(low) if high - low == 1 else f"{low}-{high - 1}" for low, high in zip(bands, bands[1:])]
    return [*labels, f"{bands[-1]}+"]


LABELS: dict[str, list[str]] = {
    "token_class": list(TOKEN_CLASSES),
    "in_string": ["outside string", "in string"],
    "in_comment": ["outside comment", "in comment"],
    "bracket_depth": _ordinal_labels(DEPTH_TOP),
    "indent_level": _ordinal_labels(LEVEL_TOP),
    "column": _band_labels(COLUMN_BANDS),
}


def meta_tracks(tracks: dict[str, np.ndarray]) -> dict[str, dict]:
    """`tracks` from `char_tracks` (possibly of many files, concatenated) as discrete meta tracks with `LABELS`:
    the bracket depth clipped at `DEPTH_TOP`, the indentation level at `LEVEL_TOP`, the column in `COLUMN_BANDS`."""
    missing = [name for name in TRACKS if name not in tracks]
    if missing:
        raise ValueError(f"tracks is missing {', '.join(missing)}")
    values = {
        "token_class": tracks["token_class"],
        "in_string": tracks["in_string"],
        "in_comment": tracks["in_comment"],
        "bracket_depth": np.minimum(tracks["bracket_depth"], DEPTH_TOP),
        "indent_level": np.minimum(tracks["indent_level"], LEVEL_TOP),
        "column": np.searchsorted(COLUMN_BANDS, tracks["column"], side="right") - 1,
    }
    return {name: {"type": "discrete", "values": values[name].astype(np.int32), "labels": LABELS[name]}
            for name in TRACKS}
