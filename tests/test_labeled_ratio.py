"""labeled_ratio: one record file split into labeled / unlabeled parts by a seeded hash."""

import numpy as np

from ssma_tf.data.normalize import IMAGENET_MEAN, IMAGENET_STD
from ssma_tf.data.pipeline import train_dataset
from tests.test_pipeline import H, W, write_records


def example_ids(records, ratio, seed, labeled_part):
    """The example indices (kept in the blue channel) of one part of the split."""
    ds = train_dataset(records, modalities=["rgb"], batch_size=1, crop=(H, W),
                       scale_range=(1.0, 1.0), flip=False, photometric=False, seed=0,
                       labeled=labeled_part, repeat=False, shuffle_buffer=1,
                       subset=(ratio, seed, labeled_part))
    ids = []
    for batch in ds:
        rgb = batch[0]["rgb"] if labeled_part else batch["rgb"]
        blue = rgb.numpy()[0, 0, 0, 2] * IMAGENET_STD[2] + IMAGENET_MEAN[2]
        ids.append(int(np.rint(blue * 255)))
    return ids


def test_split_parts_are_complementary_seeded_and_near_the_ratio(tmp_path):
    records = write_records(tmp_path, num_examples=40, num_shards=2)
    labeled = example_ids(records, 0.25, 0, True)
    unlabeled = example_ids(records, 0.25, 0, False)
    assert sorted(labeled + unlabeled) == list(range(40))
    assert 4 <= len(labeled) <= 16
    assert example_ids(records, 0.25, 0, True) == labeled
    assert example_ids(records, 0.25, 1, True) != labeled
