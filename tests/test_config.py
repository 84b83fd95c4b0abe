"""Config system: shipped configs load; errors name file, line and key."""

import glob
import os

import pytest

from ssma_tf.config import KEYS, config_from_dict, describe_keys, load_config
from ssma_tf.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write(tmp_path, text, name="x.config"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "configs", "*.config"))),
                         ids=os.path.basename)
def test_every_shipped_config_loads(path):
    config = load_config(path)
    assert config.num_classes > 1
    assert config.modalities
    if config.model == "SSMA":
        assert len(config.modalities) == 2


def test_shipped_configs_cover_datasets_and_stages():
    names = {os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "configs", "*.config"))}
    for dataset in ("cityscapes", "sunrgbd", "scannet", "freiburg_forest", "synthia", "demo"):
        for kind in ("adapnet_rgb_train", "adapnet_depth_train", "ssma_train", "ssma_test"):
            assert f"{dataset}_{kind}.config" in names


def test_legacy_ssma_config_with_blank_values(tmp_path):
    path = _write(tmp_path, "gpu_id: ''\nmodel: 'SSMA'\nnum_classes:\ncheckpoint1: ''\n"
                            "checkpoint: ' '\ntrain_data: ''\nbatch_size:\nheight: 384\n"
                            "width: 768\nlearning_rate: 1e-3\ntype: 'rgb_hha'\ndataset: ''\n")
    config = load_config(path)
    assert config.model == "SSMA" and config.checkpoint is None and config.num_classes is None
    assert config.learning_rate == 1e-3 and config.batch_size == KEYS["batch_size"].default
    assert config.modalities == ["rgb", "hha"]
    assert config.stage == "fusion" and config.freeze_experts is True
    assert config.gpu_id is None and config.source == path


def test_defaults_depend_on_model():
    single = config_from_dict({"model": "adapnet_pp", "num_classes": 3})
    assert single.model == "AdapNet_pp" and single.modalities == ["rgb"]
    assert single.stage == "expert" and single.freeze_experts is False
    fusion = config_from_dict({"model": "LinearFusion", "num_classes": 3})
    assert fusion.modalities == ["rgb", "depth"]
    assert config_from_dict({"intialize": "a/b"}).init_checkpoint == "a/b"


def test_unknown_key_names_file_line_and_hint(tmp_path):
    path = _write(tmp_path, "model: SSMA\nlerning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"x\.config:2: unknown key 'lerning_rate' "
                                          r"\(did you mean 'learning_rate'\?\)"):
        load_config(path)


@pytest.mark.parametrize("text, key", [
    ("batch_size: eight\n", "batch_size"), ("flip: 3\n", "flip"),
    ("strategy: mirorred\n", "strategy"), ("modalities: rgb\n", "modalities"),
    ("batch_size: true\n", "batch_size"), ("learning_rate: fast\n", "learning_rate")])
def test_wrong_type_names_key_and_line(tmp_path, text, key):
    path = _write(tmp_path, "model: AdapNet_pp\n" + text)
    with pytest.raises(ConfigError, match=rf"x\.config:2: key '{key}' must be"):
        load_config(path)


def test_repeated_key_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match=r":3: key 'height' repeats line 1"):
        load_config(_write(tmp_path, "height: 32\nwidth: 64\nheight: 64\n"))
    with pytest.raises(ConfigError, match=r"y\.config:2: not valid YAML"):
        load_config(_write(tmp_path, "a: 1\n b: [\n", "y.config"))
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(str(tmp_path / "missing.config"))


def test_overrides_are_yaml_and_validated(tmp_path):
    path = _write(tmp_path, "model: AdapNet_pp\nbatch_size: 8\n")
    config = load_config(path, ["batch_size=4", "modalities=[depth]", "lr_multipliers={encoder: 0.1}"])
    assert config.batch_size == 4 and config.modalities == ["depth"]
    assert config.lr_multipliers == {"encoder": 0.1}
    with pytest.raises(ConfigError, match=r"--override 'bach_size=4'.*did you mean 'batch_size'"):
        load_config(path, ["bach_size=4"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(path, ["batch_size"])
    with pytest.raises(ConfigError, match="lr_multipliers.*unknown group 'head'"):
        load_config(path, ["lr_multipliers={head: 2}"])


@pytest.mark.parametrize("key", ["pseudo_threshold", "pseudo_class_ratio"])
def test_pseudo_label_fractions_must_lie_in_0_1(tmp_path, key):
    path = _write(tmp_path, "model: linearfusion\n")
    assert getattr(load_config(path, [f"{key}=0.5"]), key) == 0.5
    with pytest.raises(ConfigError, match=rf"key '{key}' must be between 0 and 1, got 1.5"):
        load_config(path, [f"{key}=1.5"])


def test_config_is_read_only_and_replace_validates():
    config = config_from_dict({"num_classes": 3})
    with pytest.raises(AttributeError):
        config.num_classes = 4
    assert config.replace(num_classes=4).num_classes == 4
    with pytest.raises(ConfigError, match="unknown key 'num_class'"):
        config.replace(num_class=4)


def test_every_key_is_documented():
    table = describe_keys()
    for key, spec in KEYS.items():
        assert spec.doc and f"| {key} |" in table
