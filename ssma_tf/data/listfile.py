"""SSMA list files: one sample per line, `mod1 mod2 ... label`, paths relative to the list.

Tolerates CRLF, trailing spaces, blank lines, tab-separated lines (M3L style) and paths that
contain spaces (tokens are re-joined so that every column names an existing file).
"""

import dataclasses
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


def _splits(tokens, seps, n, exists):
    """All ways to join consecutive tokens into n groups that each are an existing file."""
    if n == 1:
        joined = "".join(t + s for t, s in zip(tokens, seps + [""]))
        return [[joined]] if exists(joined) else []
    found = []
    for k in range(1, len(tokens) - n + 2):
        head = "".join(t + s for t, s in zip(tokens[:k], seps[: k - 1] + [""]))
        if exists(head):
            found += [[head] + rest for rest in _splits(tokens[k:], seps[k:], n - 1, exists)]
    return found


def _columns(text, n, where, exists):
    if "\t" in text:
        cols = [c.strip() for c in text.split("\t") if c.strip()]
        if len(cols) == n:
            return cols
        raise InputError(f"{where}: expected {n} tab-separated columns, found {len(cols)}: {text!r}")
    parts = re.split(r"(\s+)", text)
    tokens, seps = parts[0::2], parts[1::2]
    if len(tokens) == n:
        return tokens
    if len(tokens) < n:
        raise InputError(f"{where}: expected {n} columns, found {len(tokens)}: {text!r}")
    options = _splits(tokens, seps, n, exists)
    if len(options) == 1:
        return options[0]
    if not options:
        raise InputError(f"{where}: expected {n} columns, found {len(tokens)} space-separated "
                         f"tokens that do not join into {n} existing files: {text!r}")
    raise InputError(f"{where}: ambiguous line, {len(options)} ways to read it as {n} existing "
                     f"files (e.g. {options[0]} or {options[1]}); separate columns with tabs")


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
    exists = (lambda p: os.path.isfile(_resolve(folder, p))) if check_exists else (lambda p: True)
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
