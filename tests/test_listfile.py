"""List-file parsing: separators, line endings, paths with spaces and the error messages."""

import os

import pytest

from ssma_tf.data.listfile import read_list
from ssma_tf.errors import InputError

COLS = ["rgb", "depth", "label"]


def _touch(folder, *names):
    for name in names:
        path = os.path.join(folder, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "wb").close()


def _write(path, text):
    with open(path, "wb") as f:
        f.write(text.encode())
    return str(path)


def test_relative_absolute_crlf_trailing_spaces_blank_lines(tmp_path):
    _touch(tmp_path, "img/a.png", "dep/a.png", "lab/a.png", "img/b.png", "dep/b.png", "lab/b.png")
    absolute = os.path.join(tmp_path, "lab/b.png")
    lst = _write(tmp_path / "train.txt",
                 "img/a.png dep/a.png lab/a.png  \r\n\r\n   \r\nimg/b.png dep/b.png "
                 + absolute + "\r\n")
    entries = read_list(lst, COLS)
    assert [e.line for e in entries] == [1, 4]
    assert entries[0].paths == tuple(str(tmp_path / p)
                                     for p in ("img/a.png", "dep/a.png", "lab/a.png"))
    assert entries[1].paths[2] == absolute


def test_tab_separated_and_paths_with_spaces(tmp_path):
    _touch(tmp_path, "my imgs/a 1.png", "d/a.png", "l/a.png")
    lst = _write(tmp_path / "tabs.txt", "my imgs/a 1.png\td/a.png\tl/a.png\n")
    assert read_list(lst, COLS)[0].paths[0] == str(tmp_path / "my imgs/a 1.png")
    lst = _write(tmp_path / "spaces.txt", "my imgs/a 1.png d/a.png l/a.png\n")
    assert read_list(lst, COLS)[0].paths == tuple(
        str(tmp_path / p) for p in ("my imgs/a 1.png", "d/a.png", "l/a.png"))


def test_ambiguous_line_with_spaces_is_an_error(tmp_path):
    _touch(tmp_path, "a", "a b", "b c", "c", "l")
    lst = _write(tmp_path / "amb.txt", "a b c l\n")
    with pytest.raises(InputError, match=r"amb.txt:1: ambiguous"):
        read_list(lst, COLS)


def test_unlabeled_list_has_no_label_column(tmp_path):
    _touch(tmp_path, "a.png", "b.png")
    lst = _write(tmp_path / "u.txt", "a.png b.png\n")
    assert len(read_list(lst, ["rgb", "depth"])[0].paths) == 2
    with pytest.raises(InputError, match="u.txt:1: expected 3 columns, found 2"):
        read_list(lst, COLS)


@pytest.mark.parametrize("text, message", [
    ("a.png b.png\n", r"bad.txt:1: expected 3 columns, found 2"),
    ("a.png b.png l.png x.png\n", r"bad.txt:1: expected 3 columns, found 4 space-separated"),
    ("a.png b.png l.png\na.png missing.png l.png\n",
     r"bad.txt:2: depth file not found: .*missing.png"),
    ("\n \r\n", r"bad.txt: list file has no samples"),
])
def test_errors_name_list_line_and_path(tmp_path, text, message):
    _touch(tmp_path, "a.png", "b.png", "l.png")
    with pytest.raises(InputError, match=message):
        read_list(_write(tmp_path / "bad.txt", text), COLS)


def test_missing_list_file(tmp_path):
    with pytest.raises(InputError, match="cannot read list file .*nope.txt"):
        read_list(tmp_path / "nope.txt", COLS)


def test_missing_file_on_a_line_with_spaces_is_named(tmp_path):
    _touch(tmp_path, "my imgs/a 1.png", "l/a.png")
    lst = _write(tmp_path / "m.txt", "my imgs/a 1.png d/a.png l/a.png\n")
    with pytest.raises(InputError, match=r"m.txt:1: depth file not found: .*d/a.png"):
        read_list(lst, COLS)
