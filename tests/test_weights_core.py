"""ssma_tf.weights core: each format read from a tiny file of its kind (detected by content, not
by name), and apply_mapping's report and messages."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from ssma_tf.errors import InputError
from ssma_tf.training.checkpoints import trackable
from ssma_tf.weights.assign import Mapping, apply_mapping
from ssma_tf.weights.readers import read_source

torch = pytest.importorskip("torch")

A = np.arange(6, dtype=np.float32).reshape(2, 3)
B = np.array([1.5, -2.0], np.float32)


def test_tf1_checkpoint_keeps_names_as_stored(tmp_path):
    prefix = str(tmp_path / "model.ckpt-3")
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=["scope/w:0", "Global_Step"],
                      shape_and_slices=["", ""], tensors=[tf.constant(A), tf.constant(7)])
    for path in (prefix, prefix + ".index"):
        source = read_source(path)
        assert source.format == "tf_checkpoint" and source.path == prefix
        np.testing.assert_array_equal(source.tensors["scope/w:0"], A)
        assert source.tensors["Global_Step"] == 7


def test_our_checkpoint_folder_is_format_ssma_tf(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, name="d")])
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(**trackable({"model": model})),
                                         str(tmp_path), 1)
    manager.save()
    source = read_source(str(tmp_path))
    assert source.format == "ssma_tf"
    assert any("d.Skernel" in name for name in source.tensors)


@pytest.mark.parametrize("legacy", [False, True])
def test_torch_file_nested_dicts_flattened(tmp_path, legacy):
    path = tmp_path / "weights.weird-extension"
    state = {"model_state_dict": {"student.w": torch.tensor(A)}, "epoch": 3,
             "ema": [torch.tensor(B)]}
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    source = read_source(str(path))
    assert source.format == "torch"
    assert sorted(source.tensors) == ["ema/0", "model_state_dict/student.w"]
    np.testing.assert_array_equal(source.tensors["ema/0"], B)


def test_torch_snapshot_with_a_numpy_scalar(tmp_path):
    path = tmp_path / "snapshot.pth"
    torch.save({"state_dict": {"w": torch.tensor(A)}, "best_miou": np.float64(0.5)}, path)
    source = read_source(str(path))
    assert list(source.tensors) == ["state_dict/w"]


def test_safetensors_single_sharded_and_hf_folder(tmp_path):
    from safetensors.numpy import save_file

    save_file({"a": A}, str(tmp_path / "model-00001-of-00002.safetensors"))
    save_file({"b": B}, str(tmp_path / "model-00002-of-00002.safetensors"))
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    source = read_source(str(tmp_path))        # a Hugging Face folder: its index
    assert source.format == "safetensors" and sorted(source.tensors) == ["a", "b"]
    single = read_source(str(tmp_path / "model-00002-of-00002.safetensors"))
    np.testing.assert_array_equal(single.tensors["b"], B)


def test_keras_h5_by_dataset_path(tmp_path):
    import h5py

    path = tmp_path / "resnet.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("conv1_conv/conv1_conv/kernel:0", data=A)
    source = read_source(str(path))
    assert source.format == "keras_h5"
    np.testing.assert_array_equal(source.tensors["conv1_conv/conv1_conv/kernel:0"], A)


def test_unknown_and_missing_files_name_the_path(tmp_path):
    (tmp_path / "notes.bin").write_bytes(b"hello world, not weights")
    with pytest.raises(InputError, match="notes.bin: not a weight file"):
        read_source(str(tmp_path / "notes.bin"))
    with pytest.raises(InputError, match="nothing.pth: no such weight file"):
        read_source(str(tmp_path / "nothing.pth"))


def tiny_model():
    inputs = keras.Input((4, 4, 2))
    x = keras.layers.Conv2D(3, 1, name="body")(inputs)
    return keras.Model(inputs, keras.layers.Conv2D(5, 1, name="head")(x))


def mapping_for(model, head_classes=5):
    mapping = Mapping()
    mapping.put("body/kernel", np.ones((1, 1, 2, 3)), "b.w")
    mapping.put("body/bias", np.full(3, 0.5), "b.b")
    mapping.put("head/kernel", np.ones((1, 1, 3, head_classes)), "h.w")
    mapping.head.add("head/kernel")
    mapping.used.add("num_batches_tracked")         # read and deliberately dropped
    return mapping


def test_report_names_matched_unused_and_lacking():
    model = tiny_model()
    report = apply_mapping(model, mapping_for(model), ["b.w", "b.b", "h.w", "extra",
                                                       "num_batches_tracked"])
    assert report.matched == ["body/bias", "body/kernel", "head/kernel"]
    assert report.unused == ["extra"] and report.lacking == ["head/bias"]
    np.testing.assert_array_equal(model.get_layer("body").bias.numpy(), [0.5] * 3)
    assert "left unused in the source: 1" in report.lines() and "  extra" in report.lines()


def test_shape_mismatch_names_both_sides_unless_a_new_head():
    model = tiny_model()
    with pytest.raises(InputError, match=r"h.w has shape \(1, 1, 3, 7\) but head/kernel has "
                                         r"\(1, 1, 3, 5\) \(a different class count"):
        apply_mapping(model, mapping_for(model, 7), ["b.w", "b.b", "h.w"])
    before = model.get_layer("head").kernel.numpy()
    report = apply_mapping(model, mapping_for(model, 7), ["b.w", "b.b", "h.w"], new_head=True)
    assert report.new_head == ["head/kernel"] and report.unused == ["h.w"]
    np.testing.assert_array_equal(model.get_layer("head").kernel.numpy(), before)


def test_missing_source_tensor_and_unknown_variable():
    model = tiny_model()
    mapping = mapping_for(model)
    mapping.want("head/bias", "h.b")
    with pytest.raises(InputError, match=r"the source lacks h.b for head/bias \(1 missing\)"):
        apply_mapping(model, mapping, [])
    mapping = Mapping()
    mapping.put("nowhere/kernel", np.ones(1), "x")
    with pytest.raises(InputError, match="the model has no variable nowhere/kernel .mapped "
                                         "from x"):
        apply_mapping(model, mapping, ["x"])
