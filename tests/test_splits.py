"""Semi-supervised split files: counts, seeds, disjointness, column dropping, committed splits."""

import os

import pytest

from ssma_tf.data import synthetic
from ssma_tf.data.listfile import read_list
from ssma_tf.datasets import splits
from ssma_tf.errors import InputError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMITTED = os.path.join(ROOT, "ssma_tf", "datasets", "splits", "synthetic")


@pytest.mark.parametrize("ratio,total,expected", [
    ("1/8", 200, 25), ("1/20", 200, 10), ("1/30", 2975, 99), ("100", 2975, 100),
    ("0.125", 16, 2), ("1/1000", 49199, 49), ("1/16", 4757, 297), ("1/1000", 10, 1)])
def test_num_labeled(ratio, total, expected):
    assert splits.num_labeled(ratio, total) == expected


@pytest.mark.parametrize("ratio,message", [("abc", "fraction"), ("-1/8", "positive"),
                                           ("500", "asks for 500")])
def test_bad_ratio(ratio, message):
    with pytest.raises(InputError, match=message):
        splits.num_labeled(ratio, 100)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    base = tmp_path_factory.mktemp("syn")
    return synthetic.generate(base / "data", num_train=24, num_val=1, height=16, width=16)


def test_make_splits_layout_and_content(small_set, tmp_path):
    written = splits.make_splits(small_set["train"], tmp_path / "s", ratios=["1/8", "5"])
    assert set(written) == {(r, k) for r in ("1-8", "5") for k in (0, 1, 2)}
    source = [e.paths for e in read_list(small_set["train"], ["rgb", "depth", "label"])]
    chosen = []
    for (ratio, seed), (labeled_path, unlabeled_path) in written.items():
        assert labeled_path == str(tmp_path / "s" / ratio / f"split{seed}" / "labeled.txt")
        labeled = [e.paths for e in read_list(labeled_path, ["rgb", "depth", "label"])]
        unlabeled = [e.paths for e in read_list(unlabeled_path, ["rgb", "depth"])]
        assert len(labeled) == (3 if ratio == "1-8" else 5)
        assert len(labeled) + len(unlabeled) == 24
        assert {p[0] for p in labeled}.isdisjoint(p[0] for p in unlabeled)
        assert all(row in source for row in labeled)
        assert labeled == [row for row in source if row in labeled]       # source order kept
        if ratio == "5":
            chosen.append(tuple(p[0] for p in labeled))
    assert len(set(chosen)) == 3                                            # seeds differ
    again = splits.make_splits(small_set["train"], tmp_path / "t", ratios=["5"], seeds=[1])
    assert (open(again[("5", 1)][0]).read().split() ==
            [os.path.relpath(p, os.path.dirname(again[("5", 1)][0]))
             for row in read_list(written[("5", 1)][0], ["a", "b", "c"]) for p in row.paths])


def test_committed_synthetic_splits_match_the_generator(tmp_path):
    """The committed files are exactly what the tool makes from the default synthetic set."""
    lists = synthetic.generate(tmp_path / "data", num_val=0, height=16, width=16)
    splits.make_splits(lists["train"], tmp_path / "s", relative_to=tmp_path / "data")
    for ratio in ("1-20", "1-8"):
        for seed in (0, 1, 2):
            for name in ("labeled.txt", "unlabeled.txt"):
                committed = open(os.path.join(COMMITTED, ratio, f"split{seed}", name)).read()
                assert committed == open(tmp_path / "s" / ratio / f"split{seed}" / name).read()
    first = open(os.path.join(COMMITTED, "1-8", "split0", "labeled.txt")).read().splitlines()
    assert len(first) == 25 and first[0].startswith("train/rgb/")


def test_cli(small_set, tmp_path, capsys):
    assert splits.main(["--list", small_set["train"], "--out", str(tmp_path / "c"),
                        "--ratios", "1/4", "--seeds", "7"]) == 0
    assert "1-4 split7" in capsys.readouterr().out
    assert len(open(tmp_path / "c" / "1-4" / "split7" / "labeled.txt").read().splitlines()) == 6
    assert splits.main(["--list", str(tmp_path / "none.txt"), "--out", str(tmp_path / "c")]) == 2
    assert "none.txt" in capsys.readouterr().err
