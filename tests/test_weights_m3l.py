"""M3L snapshot import: a synthetic training snapshot with WeTrLinearFusion's names and
shapes (MiT-b0, 13 classes; student and teacher, AdamW state), mapped into linearfusion;
every tensor checked against the published key-by-key correspondence."""

import re

import numpy as np
import pytest
import torch

from ssma_tf.config import config_from_dict
from ssma_tf.errors import InputError
from ssma_tf.models import factory
from ssma_tf.weights.assign import variables_by_path
from test_weights_resnet import import_into

DIMS, DEPTHS, SR, E, CLASSES = (32, 64, 160, 256), (2, 2, 2, 2), (8, 4, 2, 1), 256, 13


def wetr_state(seed, mask_tokens=False):
    """WeTrLinearFusion('mit_b0', 13)'s state dict: names and shapes, random values."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    state = {"alpha": torch.ones(2)}
    cin = 3
    for s, (c, depth, sr) in enumerate(zip(DIMS, DEPTHS, SR), 1):
        k = 7 if s == 1 else 3
        pe = f"encoder.patch_embed{s}."
        if mask_tokens:
            state[pe + "mask_token"] = r(c)
        state.update({pe + "proj.module.weight": r(c, cin, k, k), pe + "proj.module.bias": r(c)})
        ln = lambda key, n: {f"{key}.ln_{m}.{v}": r(n) for m in (0, 1)  # noqa: E731
                             for v in ("weight", "bias")}
        state.update(ln(pe + "norm", c))
        for j in range(depth):
            b = f"encoder.block{s}.{j}."
            state.update(ln(b + "norm1", c))
            for name, out, inp in (("q", c, c), ("kv", 2 * c, c), ("proj", c, c)):
                state[f"{b}attn.{name}.module.weight"] = r(out, inp)
                state[f"{b}attn.{name}.module.bias"] = r(out)
            if sr > 1:
                state[b + "attn.sr.module.weight"] = r(c, c, sr, sr)
                state[b + "attn.sr.module.bias"] = r(c)
                state.update(ln(b + "attn.norm", c))
            state.update(ln(b + "norm2", c))
            state[b + "mlp.fc1.module.weight"], state[b + "mlp.fc1.module.bias"] = \
                r(4 * c, c), r(4 * c)
            state[b + "mlp.dwconv.dwconv.weight"], state[b + "mlp.dwconv.dwconv.bias"] = \
                r(4 * c, 1, 3, 3), r(4 * c)
            state[b + "mlp.fc2.module.weight"], state[b + "mlp.fc2.module.bias"] = \
                r(c, 4 * c), r(c)
        state.update(ln(f"encoder.norm{s}", c))
        cin = c
    for k in (4, 3, 2, 1):
        state[f"decoder.linear_c{k}.proj.weight"] = r(E, DIMS[k - 1])
        state[f"decoder.linear_c{k}.proj.bias"] = r(E)
    state["decoder.linear_fuse.conv.weight"] = r(E, 4 * E, 1, 1)
    for v in ("weight", "bias", "running_mean"):
        state[f"decoder.linear_fuse.bn.{v}"] = r(E)
    state["decoder.linear_fuse.bn.running_var"] = 0.5 + torch.rand(E, generator=g)
    state["decoder.linear_fuse.bn.num_batches_tracked"] = torch.tensor(0)
    state["decoder.linear_pred.weight"], state["decoder.linear_pred.bias"] = \
        r(CLASSES, E, 1, 1), r(CLASSES)
    return state


def snapshot(path, mask_tokens=False):
    """M3L's torch.save of a mean-teacher run: model_state_dict with student./teacher.,
    AdamW state for three parameter groups, the iteration counters."""
    model = {f"student.{k}": v for k, v in wetr_state(1, mask_tokens).items()}
    model.update({f"teacher.{k}": v for k, v in wetr_state(2, mask_tokens).items()})
    adam = {"state": {0: {"step": torch.tensor(10.0), "exp_avg": torch.zeros(4),
                          "exp_avg_sq": torch.zeros(4)}},
            "param_groups": [{"lr": 6e-5, "params": [0]}]}
    torch.save({"epoch": 3, "model_state_dict": model, "optimizer_state_dict": [adam] * 3,
                "current_idx": 7}, path)
    return path


B, T = r"encoder\.block(\d)\.(\d)\.", "encoder/block{0}_{1+}/"


def expected_value(key, value):
    """Our variable path and value for an M3L key (the published correspondence)."""
    key = key.replace(".module.", ".")
    v = value.numpy()
    rules = [
        (r"encoder\.patch_embed(\d)\.proj\.weight", "encoder/patch_embed{0}/kernel", "conv"),
        (r"encoder\.patch_embed(\d)\.proj\.bias", "encoder/patch_embed{0}/bias", None),
        (r"encoder\.patch_embed1\.mask_token", "encoder/mask_token", None),
        (r"encoder\.patch_embed(\d)\.norm\.ln_(\d)\.(weight|bias)", "encoder/patch_norm{0}/{2}",
         "ln"),
        (B + r"(norm1|norm2)\.ln_(\d)\.(weight|bias)",
         T + "{2}/{4}", "ln"),
        (B + r"attn\.norm\.ln_(\d)\.(weight|bias)",
         T + "attn/sr_norm/{3}", "ln"),
        (B + r"attn\.(q|kv|proj)\.weight", T + "attn/{2}/kernel",
         "T"),
        (B + r"attn\.(q|kv|proj|sr)\.bias", T + "attn/{2}/bias",
         None),
        (B + r"attn\.sr\.weight", T + "attn/sr/kernel", "conv"),
        (B + r"mlp\.(fc1|fc2)\.weight", T + "mlp/{2}/kernel",
         "T"),
        (B + r"mlp\.(fc1|fc2)\.bias", T + "mlp/{2}/bias", None),
        (B + r"mlp\.dwconv\.dwconv\.weight",
         T + "mlp/dwconv/kernel", "dw"),
        (B + r"mlp\.dwconv\.dwconv\.bias", T + "mlp/dwconv/bias",
         None),
        (r"encoder\.norm(\d)\.ln_(\d)\.(weight|bias)", "encoder/norm{0}/{2}", "ln"),
        (r"decoder\.linear_c(\d)\.proj\.weight", "decoder/linear_c{0}_kernel", "T"),
        (r"decoder\.linear_c(\d)\.proj\.bias", "decoder/linear_c{0}_bias", None),
        (r"decoder\.linear_fuse\.conv\.weight", "decoder/fuse_kernel", "1x1"),
        (r"decoder\.linear_fuse\.bn\.(weight|bias|running_mean|running_var)",
         "decoder/fuse_bn/{0}", None),
        (r"decoder\.linear_pred\.weight", "decoder/classifier/kernel", "conv"),
        (r"decoder\.linear_pred\.bias", "decoder/classifier/bias", None),
        (r"alpha", "split_streams/alpha", None),
    ]
    names = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean",
             "running_var": "moving_variance"}
    for pattern, target, kind in rules:
        m = re.fullmatch(pattern, key)
        if m:
            groups = list(m.groups())
            stream = None
            if kind == "ln":
                groups[-1], stream = names[groups[-1]], int(groups[-2])
            if "fuse_bn" in target:
                groups[0] = names[groups[0]]
            if "{1+}" in target:
                target = target.replace("{1+}", str(int(groups[1]) + 1))
            path = target.format(*groups)
            transform = {"conv": lambda a: a.transpose(2, 3, 1, 0), "T": lambda a: a.T,
                         "dw": lambda a: a.transpose(2, 3, 0, 1),
                         "1x1": lambda a: a[:, :, 0, 0].T}.get(kind, lambda a: a)
            return path, stream, transform(v)
    return None


def build(model="linearfusion", classes=CLASSES, **keys):
    config = config_from_dict({"model": model, "num_classes": classes, "backbone": "b0",
                               "modalities": ["rgb", "depth"], **keys})
    return config, factory.build_model(config, {"rgb": 3, "depth": 1})




def assert_every_tensor_from(model, state):
    variables = variables_by_path(model)
    seen = set()
    for key, value in state.items():
        expected = expected_value(key, value)
        if expected is None:
            assert key.endswith(("num_batches_tracked", "mask_token")), key
            continue
        path, stream, array = expected
        actual = variables[path].numpy()
        np.testing.assert_array_equal(actual if stream is None else actual[stream], array,
                                      err_msg=path)
        seen.add(path)
    return seen


@pytest.mark.parametrize("branch", [None, "student"])
def test_m3l_snapshot_into_linearfusion_sets_every_tensor_of_the_branch(tmp_path, branch):
    path = snapshot(tmp_path / "sid_1.0_mt.pth")
    config, model = build()
    options = {"branch": branch} if branch else {}
    name, report = import_into(path, config, model, **options)
    assert name == "m3l"
    assert report.unused == []
    assert report.lacking == ["encoder/mask_token"]     # WeTrLinearFusion has none
    chosen = wetr_state(1 if branch == "student" else 2)
    assert len(chosen) == 253      # WeTrLinearFusion('mit_b0', 13)
    seen = assert_every_tensor_from(model, chosen)
    assert seen == set(variables_by_path(model)) - {"encoder/mask_token"}
    assert any(f"imported the {branch or 'teacher'}" in note for note in report.notes)


def test_the_masked_variant_sets_the_mask_token_and_drops_the_unused_ones(tmp_path):
    path = snapshot(tmp_path / "sid_1.0_m3l.pth", mask_tokens=True)
    config, model = build()
    _, report = import_into(path, config, model)
    assert report.lacking == [] and report.unused == []
    teacher = wetr_state(2, mask_tokens=True)
    np.testing.assert_array_equal(variables_by_path(model)["encoder/mask_token"].numpy(),
                                  teacher["encoder.patch_embed1.mask_token"].numpy())
    assert sum("mask_token has no counterpart" in note for note in report.notes) == 3


def test_m3l_errors_name_the_branch_and_the_class_count(tmp_path):
    path = snapshot(tmp_path / "s.pth")
    config, model = build()
    with pytest.raises(InputError, match="branch: expected one of"):
        import_into(path, config, model, branch="ema")
    config, model = build(classes=37)
    with pytest.raises(InputError, match="linear_pred.* allow a new head"):
        import_into(path, config, model)
    plain = tmp_path / "model_sup_final.pth"     # one model, no student/teacher
    torch.save(wetr_state(3), plain)
    config, model = build(ensemble="mean")
    _, report = import_into(plain, config, model, branch="student")
    assert any("branch student does not apply" in note for note in report.notes)
    assert any("alpha not imported" in note for note in report.notes)
