"""Semi-supervised splits: labeled/unlabeled list files from one labeled list.

For each ratio ("1/8", "1/30", or an absolute count "100") and seed k, a seeded permutation
picks floor(N * ratio) samples (at least 1) as labeled; the rest are unlabeled and lose their
label column. Both keep the source order. Written as
``<out>/<ratio>/split<k>/{labeled,unlabeled}.txt`` with ratio folders "1-8", "100".
Paths are written relative to each output file's folder (usable as is), or relative to
``--relative-to`` (the committed synthetic splits under ssma_tf/datasets/splits/synthetic/
are relative to the synthetic dataset root, like its train.txt: regenerate them beside your
data with ``python -m ssma_tf.datasets.splits --list ROOT/train.txt --out ROOT/splits``).
CLI: python -m ssma_tf.datasets.splits --list L --out O [--ratios 1/20 1/8] [--seeds 0 1 2]
    [--columns 3]
"""

import argparse
import fractions
import os
import sys

import numpy as np

from ssma_tf.cli import guarded
from ssma_tf.data.listfile import read_list
from ssma_tf.datasets.prepare_common import write_list
from ssma_tf.errors import InputError

DEFAULT_RATIOS = ("1/20", "1/8")
DEFAULT_SEEDS = (0, 1, 2)


def num_labeled(ratio, total):
    """How many labeled samples `ratio` ("1/8", "0.125" or a count "100") means for `total`."""
    text = str(ratio).strip()
    try:
        value = fractions.Fraction(text)
    except ValueError as err:
        raise InputError(
            f"ratio {ratio!r}: expected a fraction like 1/8 or a count like 100") from err
    if value <= 0:
        raise InputError(f"ratio {ratio!r}: must be positive")
    count = int(value) if value.denominator == 1 and value > 1 else int(total * value)
    if count > total:
        raise InputError(f"ratio {ratio!r}: asks for {count} labeled samples, the list has {total}")
    return max(count, 1)


def ratio_folder(ratio):
    return str(ratio).strip().replace("/", "-")


def select_labeled(total, count, seed):
    """Sorted indices of the labeled samples for this seed."""
    return np.sort(np.random.default_rng(seed).permutation(total)[:count])


def make_splits(list_path, out_dir, *, ratios=DEFAULT_RATIOS, seeds=DEFAULT_SEEDS, columns=3,
                relative_to=None):
    """Write every (ratio, seed) split; returns {(ratio_folder, seed): (labeled, unlabeled)}."""
    names = [f"column{i}" for i in range(columns - 1)] + ["label"]
    entries = read_list(list_path, names)
    written = {}
    for ratio in ratios:
        count = num_labeled(ratio, len(entries))
        for seed in seeds:
            chosen = set(select_labeled(len(entries), count, seed).tolist())
            folder = os.path.join(out_dir, ratio_folder(ratio), f"split{seed}")
            labeled = [e.paths for i, e in enumerate(entries) if i in chosen]
            unlabeled = [e.paths[:-1] for i, e in enumerate(entries) if i not in chosen]
            written[(ratio_folder(ratio), seed)] = (
                write_list(os.path.join(folder, "labeled.txt"), labeled, relative_to),
                write_list(os.path.join(folder, "unlabeled.txt"), unlabeled, relative_to))
    return written


@guarded
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--list", required=True, help="labeled list file (e.g. train.txt)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--ratios", nargs="+", default=list(DEFAULT_RATIOS))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(DEFAULT_SEEDS))
    parser.add_argument("--columns", type=int, default=3, help="columns per line, label last")
    parser.add_argument("--relative-to", default=None,
                        help="write paths relative to this folder instead of each list's folder")
    args = parser.parse_args(argv)
    written = make_splits(args.list, args.out, ratios=args.ratios, seeds=args.seeds,
                          columns=args.columns, relative_to=args.relative_to)
    for (ratio, seed), (labeled, _) in sorted(written.items()):
        print(f"{ratio} split{seed}: {labeled}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
