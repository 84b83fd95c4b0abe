"""MiT / Segformer weight import: transformers' SegformerForSemanticSegmentation (b0, b2;
random weights, saved with save_pretrained as safetensors, and as pytorch_model.bin), the
NVlabs mit_bX.pth layout (made from it by NVlabs' names), into segformer, linearfusion and
tokenfusion; outputs compared on the same input."""

import keras
import numpy as np
import pytest
import safetensors.torch
import torch
from transformers import SegformerConfig, SegformerForSemanticSegmentation

from ssma_tf.errors import InputError
from ssma_tf.weights.readers import read_source
from test_weights_resnet import build, import_into

TOLERANCE = 1e-4
HF = {"b0": dict(hidden_sizes=[32, 64, 160, 256], depths=[2, 2, 2, 2], decoder_hidden_size=256),
      "b2": dict(hidden_sizes=[64, 128, 320, 512], depths=[3, 4, 6, 3], decoder_hidden_size=768)}


def hf_segformer(variant="b0", classes=5, seed=0):
    """A random SegformerForSemanticSegmentation; LayerNorm and BN parameters perturbed."""
    torch.manual_seed(seed)
    config = SegformerConfig(num_labels=classes, **HF[variant])
    model = SegformerForSemanticSegmentation(config).eval()
    for module in model.modules():
        if isinstance(module, (torch.nn.LayerNorm, torch.nn.BatchNorm2d)):
            n = module.weight.shape[0]
            module.weight.data = 1 + 0.3 * torch.randn(n)
            module.bias.data = 0.3 * torch.randn(n)
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.data = 0.3 * torch.randn(n)
            module.running_var.data = 0.5 + torch.rand(n)
    return model


def set_layer_norm_eps(model, eps, patch_and_sr_eps=None):
    """Every LayerNorm's eps; `patch_and_sr_eps` for the patch-embed and attention-sr ones
    (NVlabs' MiT: 1e-5 there, 1e-6 elsewhere)."""
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.LayerNorm):
            # transformers 4 and 5 module names: "...patch_embeddings.0.layer_norm" /
            # "...patch_embeddings.layer_norm"; the sr norm is the attention's only LayerNorm
            patch_or_sr = ".patch_embeddings" in name or ".attention." in name
            module.eps = patch_and_sr_eps if patch_and_sr_eps and patch_or_sr else eps






def image(height=50, width=66, channels=3, seed=0):
    return np.random.default_rng(seed).normal(size=(1, height, width, channels)).astype("f4")


def nchw(x):
    return torch.from_numpy(x.transpose(0, 3, 1, 2).copy())


def nhwc(tensor):
    return tensor.detach().numpy().transpose(0, 2, 3, 1)


def decoder_logits(model, x):
    """Our logits on the stride-4 grid (before the resize to the input), as HF returns."""
    head = keras.Model(model.input, model.get_layer("decoder").output)
    return keras.ops.convert_to_numpy(head({"rgb": x}, training=False))


def stage_outputs(model, inputs):
    encoder = keras.Model(model.input, model.get_layer("encoder").output)
    outputs = encoder(inputs, training=False)
    outputs = outputs["features"] if isinstance(outputs, dict) else outputs
    return [keras.ops.convert_to_numpy(o) for o in outputs]


def hf_stages(reference, x):
    with torch.no_grad():
        hidden = reference.segformer(nchw(x), output_hidden_states=True).hidden_states
    return [nhwc(h) for h in hidden]


@pytest.mark.parametrize("variant", ["b0", "b2"])
def test_hf_segformer_reproduces_the_logits(tmp_path, variant):
    reference = hf_segformer(variant)
    reference.save_pretrained(tmp_path / "hf")
    assert (tmp_path / "hf" / "model.safetensors").is_file()
    source = read_source(str(tmp_path / "hf"))
    assert "segformer.encoder.block.0.0.attention.self.query.weight" in source.tensors
    config, model = build("segformer", backbone=variant,
                          decoder_dim=HF[variant]["decoder_hidden_size"])
    name, report = import_into(tmp_path / "hf", config, model)
    assert name == "hf_segformer"
    assert report.unused == [] and report.lacking == []
    x = image()
    with torch.no_grad():
        expected = nhwc(reference(nchw(x)).logits)
    shipped = np.abs(decoder_logits(model, x) - expected).max()
    assert shipped < TOLERANCE
    # the remaining difference is HF's LayerNorm epsilon (1e-5; ours 1e-6) alone
    set_layer_norm_eps(reference, 1e-6)
    with torch.no_grad():
        same_eps = nhwc(reference(nchw(x)).logits)
    exact = np.abs(decoder_logits(model, x) - same_eps).max()
    print(f"{variant} logits vs transformers: eps as shipped {shipped:.2e}, same eps {exact:.2e}")
    assert exact < min(shipped, 1e-5)
    if variant != "b0":
        return
    # the hub's pytorch_model.bin: the same transformers-4 names in a torch file
    (tmp_path / "bin").mkdir()
    torch.save(safetensors.torch.load_file(str(tmp_path / "hf" / "model.safetensors")),
               tmp_path / "bin" / "pytorch_model.bin")
    config, model = build("segformer")
    name, _ = import_into(tmp_path / "bin" / "pytorch_model.bin", config, model)
    assert name == "hf_segformer"
    assert np.abs(decoder_logits(model, x) - same_eps).max() < 1e-5
    config, model = build("segformer", classes=3)
    with pytest.raises(InputError, match="decode_head.classifier.* allow a new head"):
        import_into(tmp_path / "bin", config, model)
    _, report = import_into(tmp_path / "bin", config, model, new_head=True)
    assert report.new_head == ["decoder/classifier/bias", "decoder/classifier/kernel"]


def hf_file_state(reference, folder):
    """The tensors HF writes to disk (transformers-4 names; a live 5.x state_dict renames)."""
    reference.save_pretrained(folder)
    return safetensors.torch.load_file(str(folder / "model.safetensors"))


def nvlabs_state(reference, folder):
    """NVlabs' mit_bX.pth names for the HF encoder (NVlabs <-> HF, one to one), plus
    the ImageNet head; key and value rows fused into kv."""
    hf = hf_file_state(reference, folder)
    state = {}
    for stage in range(4):
        s = stage + 1
        pe = f"segformer.encoder.patch_embeddings.{stage}."
        for v in ("weight", "bias"):
            state[f"patch_embed{s}.proj.{v}"] = hf[pe + f"proj.{v}"]
            state[f"patch_embed{s}.norm.{v}"] = hf[pe + f"layer_norm.{v}"]
            state[f"norm{s}.{v}"] = hf[f"segformer.encoder.layer_norm.{stage}.{v}"]
        for j in range(reference.config.depths[stage]):
            hb, nb = f"segformer.encoder.block.{stage}.{j}.", f"block{s}.{j}."
            for v in ("weight", "bias"):
                pairs = {"norm1": "layer_norm_1", "norm2": "layer_norm_2",
                         "attn.q": "attention.self.query", "attn.proj": "attention.output.dense",
                         "mlp.fc1": "mlp.dense1", "mlp.fc2": "mlp.dense2",
                         "mlp.dwconv.dwconv": "mlp.dwconv.dwconv"}
                if stage < 3:
                    pairs.update({"attn.sr": "attention.self.sr",
                                  "attn.norm": "attention.self.layer_norm"})
                for ours, theirs in pairs.items():
                    state[f"{nb}{ours}.{v}"] = hf[f"{hb}{theirs}.{v}"]
                state[f"{nb}attn.kv.{v}"] = torch.cat([hf[f"{hb}attention.self.key.{v}"],
                                                       hf[f"{hb}attention.self.value.{v}"]])
    state["head.weight"] = torch.randn(1000, reference.config.hidden_sizes[-1])
    state["head.bias"] = torch.randn(1000)
    return state


def test_nvlabs_mit_into_segformer_matches_the_stage_outputs(tmp_path):
    reference = hf_segformer("b0")
    state = nvlabs_state(reference, tmp_path / "hf")
    assert len(state) == 178    # NVlabs mit_b0.pth: 176 backbone tensors + head
    torch.save(state, tmp_path / "mit_b0.pth")
    config, model = build("segformer")
    name, report = import_into(tmp_path / "mit_b0.pth", config, model)
    assert name == "nvlabs_mit" and report.unused == []
    assert all(p.startswith("decoder/") for p in report.lacking)
    x = image()
    # with NVlabs' epsilons (1e-5 in the patch-embed and attention-sr norms) the only
    # difference is theirs vs our 1e-6; with 1e-6 everywhere the mapping is exact
    set_layer_norm_eps(reference, 1e-6, patch_and_sr_eps=1e-5)
    ours = stage_outputs(model, {"rgb": x})
    nvlabs_eps = max(np.abs(o - t).max() for o, t in zip(ours, hf_stages(reference, x)))
    set_layer_norm_eps(reference, 1e-6)
    exact = max(np.abs(o - t).max() for o, t in zip(ours, hf_stages(reference, x)))
    print(f"stage outputs vs the reference: NVlabs eps {nvlabs_eps:.2e}, ours {exact:.2e}")
    assert exact < 1e-5 and nvlabs_eps > 10 * exact


def test_imagenet_mit_into_linearfusion_copies_each_layer_norm_per_stream(tmp_path):
    reference = hf_segformer("b0")
    state = hf_file_state(reference, tmp_path / "hf")
    path = tmp_path / "mit_b0.pth"
    torch.save(nvlabs_state(reference, tmp_path / "hf"), path)
    set_layer_norm_eps(reference, 1e-6)     # ours; the mapping is what is checked here
    # fusion ratio 1: no mixing, so each stream is the plain MiT on its modality
    config, model = build("linearfusion", modalities=("rgb", "depth"),
                          channels={"rgb": 3, "depth": 1}, fusion_ratio=1.0)
    built_decoder = model.get_layer("decoder").fuse_kernel.numpy()
    _, report = import_into(path, config, model)
    assert set(report.lacking) == {p for p in report.lacking
                                   if p.startswith(("decoder/", "split_streams/"))
                                   or p == "encoder/mask_token"}
    assert any("30 LayerNorms copied into each of the model's 2 streams" in n
               for n in report.notes)
    gamma = model.get_layer("encoder").patch_norms[0].gamma.numpy()
    ln = state["segformer.encoder.patch_embeddings.0.layer_norm.weight"].numpy()
    np.testing.assert_array_equal(gamma, np.stack([ln, ln]))
    np.testing.assert_array_equal(model.get_layer("decoder").fuse_kernel.numpy(), built_decoder)
    rgb, depth = image(), image(channels=1, seed=1)
    streams = stage_outputs(model, {"rgb": rgb, "depth": depth})
    for ours, expected_rgb, expected_depth in zip(streams, hf_stages(reference, rgb),
                                                  hf_stages(reference,
                                                            np.repeat(depth, 3, -1))):
        assert np.abs(ours[:1] - expected_rgb).max() < TOLERANCE
        assert np.abs(ours[1:] - expected_depth).max() < TOLERANCE


def test_imagenet_mit_into_tokenfusion_sets_every_encoder_tensor(tmp_path):
    state = hf_file_state(hf_segformer("b0"), tmp_path / "hf")
    config, model = build("tokenfusion", modalities=("rgb", "depth"))
    _, report = import_into(tmp_path / "hf", config, model)
    assert report.lacking and all(p.startswith(("decoder/", "split_streams/"))
                                  or p == "encoder/mask_token" or "/exchange" in p
                                  for p in report.lacking)
    kv = model.get_layer("encoder").stages[1][1].attn.kv.kernel.numpy()
    block = "segformer.encoder.block.1.1.attention.self."
    np.testing.assert_array_equal(kv, torch.cat([state[block + "key.weight"],
                                                 state[block + "value.weight"]]).numpy().T)


def test_a_different_variant_is_refused_naming_both(tmp_path):
    hf_segformer("b0").save_pretrained(tmp_path / "hf")
    config, model = build("segformer", backbone="tiny")
    with pytest.raises(InputError, match=r"dims \(32, 64, 160, 256\).*model's \(8, 16, 24, 32\)"):
        import_into(tmp_path / "hf", config, model)
