"""The shared PyTorch -> Keras layouts and the first-layer channel rule, on hand-made
numbers."""

import numpy as np

from ssma_tf.weights import torch_layout
from ssma_tf.weights.assign import Mapping


def test_layouts_move_the_axes_as_keras_expects():
    conv = np.arange(2 * 3 * 1 * 2).reshape(2, 3, 1, 2)          # O=2, I=3, kh=1, kw=2
    hwio = torch_layout.conv_kernel(conv)
    assert hwio.shape == (1, 2, 3, 2) and hwio[0, 1, 2, 1] == conv[1, 2, 0, 1]
    dw = np.arange(4 * 9).reshape(4, 1, 3, 3)
    assert torch_layout.depthwise_kernel(dw)[2, 1, 3, 0] == dw[3, 0, 2, 1]
    linear = np.array([[1, 2, 3], [4, 5, 6]])                     # out 2, in 3
    np.testing.assert_array_equal(torch_layout.dense_kernel(linear), [[1, 4], [2, 5], [3, 6]])
    np.testing.assert_array_equal(torch_layout.pointwise_matrix(linear[:, :, None, None]),
                                  [[1, 4], [2, 5], [3, 6]])


def test_the_channel_rule_by_hand():
    # one output, 1x1: RGB weights (1, 2, 6)
    rgb = np.array([1.0, 2.0, 6.0]).reshape(1, 1, 3, 1)
    # 1 channel: the sum over RGB (9); 2 channels: sum / 2 each (4.5, 4.5);
    # 4 channels: 9 / 4 each; 3 channels: unchanged
    np.testing.assert_array_equal(torch_layout.fit_input_channels(rgb, 1).ravel(), [9.0])
    np.testing.assert_array_equal(torch_layout.fit_input_channels(rgb, 2).ravel(), [4.5, 4.5])
    np.testing.assert_array_equal(torch_layout.fit_input_channels(rgb, 4).ravel(), [2.25] * 4)
    np.testing.assert_array_equal(torch_layout.fit_input_channels(rgb, 3), rgb)
    # the property: N equal channels of x give what (x, x, x) gives the RGB kernel
    x = 0.7
    for n in (1, 2, 4, 5):
        fitted = torch_layout.fit_input_channels(rgb, n)
        assert np.isclose((fitted[0, 0, :, 0] * x).sum(), (rgb[0, 0, :, 0] * x).sum())


def test_first_layer_fits_only_a_differing_input_axis_and_says_so():
    class Var:
        def __init__(self, shape):
            self.shape = shape

    kernel = np.ones((7, 7, 3, 4))
    mapping = Mapping()
    torch_layout.first_layer(mapping, "conv1/kernel", kernel, {"conv1/kernel": Var((7, 7, 1, 4))},
                             "conv1.weight")
    assert mapping.values["conv1/kernel"].shape == (7, 7, 1, 4)
    assert np.all(mapping.values["conv1/kernel"] == 3.0)
    assert "3 input channels, the model 1" in mapping.notes[0]
    mapping = Mapping()     # other shape differences are left for the shape check to report
    torch_layout.first_layer(mapping, "conv1/kernel", kernel, {"conv1/kernel": Var((3, 3, 1, 4))},
                             "conv1.weight")
    assert mapping.values["conv1/kernel"].shape == (7, 7, 3, 4) and not mapping.notes


def test_find_prefix_takes_the_shortest_wrapper():
    names = ["module.conv1.weight", "model_state/module.encoder.conv1.weight", "fc.weight"]
    assert torch_layout.find_prefix(names, ("conv1.weight",)) == "module."
    assert torch_layout.find_prefix(names, ("layer1.0.conv1.weight",)) is None
