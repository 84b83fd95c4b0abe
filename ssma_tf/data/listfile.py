"""SSMA list files: one sample per line, `mod1 mod2 ... label`, paths relative to the list.

Tolerates CRLF, trailing spaces, blank lines, tab-separated lines (M3L style) and paths that
contain spaces (tokens are re-joined so that every column names an existing file).
"""

import dataclasses
import functools
import itertools
import os
import re

from ssma_tf.errors import InputError


@dataclasses.dataclass(frozen=True)
class ListEntry:
    """One sample: its 1-based line number in the list file and one path per column."""

    line: int
    paths: tuple


def _resolve(folder, path):
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(folder, path))


def _partitions(tokens, seps, n):
    """Every way to join consecutive tokens (with their original separators) into n columns."""
    for cuts in itertools.combinations(range(1, len(tokens)), n - 1):
        bounds = (0,) + cuts + (len(tokens),)
        yield ["".join(t + s for t, s in zip(tokens[a:b], seps[a:b - 1] + [""]))
               for a, b in zip(bounds, bounds[1:])]


def _columns(text, n, where, exists):
    if "\t" in text:
        cols = [c.strip() for c in text.split("\t") if c.strip()]
        if len(cols) == n:
            return cols
        raise InputError(f"{where}: expected {n} tab-separated columns, found {len(cols)}: "
                         f"{text!r}")
    parts = re.split(r"(\s+)", text)
    tokens, seps = parts[0::2], parts[1::2]
    if len(tokens) == n:
        return tokens
    if len(tokens) < n:
        raise InputError(f"{where}: expected {n} columns, found {len(tokens)}: {text!r}")
    # Paths with spaces: keep the readings whose columns are existing files.
    scored = [(sum(map(exists, cols)), cols) for cols in _partitions(tokens, seps, n)]
    best = max(score for score, _ in scored)
    options = [cols for score, cols in scored if score == best]
    if best == n and len(options) > 1:
        raise InputError(f"{where}: ambiguous line, {len(options)} ways to read it as {n} existing "
                         f"files (e.g. {options[0]} or {options[1]}); separate columns with tabs")
    if best == n or (best == n - 1 and len(options) == 1 and
                     all(exists(c) for c in options[0] if c not in tokens)):
        return options[0]          # joins backed by existing files: one missing file is named later
    raise InputError(f"{where}: expected {n} columns, found {len(tokens)} space-separated "
                     f"tokens that do not join into {n} existing files: {text!r}")


def read_list(list_path, columns, *, check_exists=True) -> list:
    """Parse a list file into ListEntry rows; `columns` names the columns (e.g. rgb, depth, label).

    Raises InputError naming the list file, line and path for a missing list, a wrong column
    count, a missing file (when `check_exists`) or an empty list.
    """
    list_path = str(list_path)
    n = len(columns)
    try:
        with open(list_path, encoding="utf-8-sig") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read list file {list_path}: {e}") from e
    folder = os.path.dirname(os.path.abspath(list_path))
    exists = functools.lru_cache(maxsize=None)(
        (lambda p: os.path.isfile(_resolve(folder, p))) if check_exists else (lambda p: True))
    entries = []
    for number, raw in enumerate(lines, start=1):
        text = raw.strip()
        if not text:
            continue
        where = f"{list_path}:{number}"
        paths = tuple(_resolve(folder, c) for c in _columns(text, n, where, exists))
        if check_exists:
            for name, path in zip(columns, paths):
                if not os.path.isfile(path):
                    raise InputError(f"{where}: {name} file not found: {path}")
        entries.append(ListEntry(number, paths))
    if not entries:
        raise InputError(f"{list_path}: list file has no samples")
    return entries
