"""Dataset browser: PNG per example, modalities undone, depth holes and padding black."""

import os

import cv2
import numpy as np

from ssma_tf.data.browse import main
from test_pipeline import H, W, make_sample, write_records


def read_rgb(path):
    return cv2.cvtColor(cv2.imread(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def test_browse_renders_full_size_examples(tmp_path, capsys):
    records = write_records(tmp_path, num_examples=3)
    out = str(tmp_path / "view")
    assert main(["--records", records, "--out", out, "--num", "5", "--dataset", "synthetic"]) == 0
    assert sorted(os.listdir(out)) == [f"example_{i:04d}.png" for i in range(3)]
    assert "wrote 3 PNGs" in capsys.readouterr().out
    montage = read_rgb(os.path.join(out, "example_0001.png"))
    assert montage.shape == (H, 4 * W, 3)  # rgb | depth | hha | label
    arrays, label = make_sample(1)
    assert np.abs(montage[:, :W].astype(int) - arrays["rgb"]).max() <= 1
    from ssma_tf.datasets.registry import get_dataset

    np.testing.assert_array_equal(montage[:, 3 * W:], get_dataset("synthetic").palette[label])


def test_browse_augmented_shows_padding_black(tmp_path):
    records = write_records(tmp_path, num_examples=2)
    out = str(tmp_path / "aug")
    assert main(["--records", records, "--out", out, "--augment", "--crop", "80,100",
                 "--modalities", "depth,rgb", "--num", "2", "--dataset", "synthetic"]) == 0
    montage = read_rgb(os.path.join(out, "example_0000.png"))
    assert montage.shape == (80, 3 * 100, 3)  # depth | rgb | label; crop > 2x image: padded
    depth_black = montage[:, :100].max(axis=-1) == 0
    label_black = montage[:, 200:].max(axis=-1) == 0  # padding = ignore label = black
    assert depth_black.mean() > 0.2
    np.testing.assert_array_equal(depth_black, label_black)


def test_browse_bad_records_exit_2(tmp_path, capsys):
    assert main(["--records", str(tmp_path / "nope.tfrecords"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "nope.tfrecords" in err
