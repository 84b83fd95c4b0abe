"""MiT / Segformer weights -> `segformer`, `linearfusion`, `tokenfusion` (models/mit.py).

Layouts, each first brought to one form (NVlabs encoder names, M3L decoder names):
- `nvlabs_mit`: NVlabs' ImageNet `mit_bX.pth` (flat; `patch_embed{s}.proj`, `block{s}.{j}.attn.kv`,
  ...; the ImageNet classifier `head.*` is dropped). Also inside a wrapper
  (`state_dict/backbone.` of an mmseg-0.x segmentation checkpoint: its encoder only).
- `hf_segformer`: Hugging Face `nvidia/mit-bX` and `nvidia/segformer-bX-*` files
  (`model.safetensors` or `pytorch_model.bin`) with the transformers-4 names that every
  version writes to disk (`segformer.encoder.block.{i}.{j}.attention.self.query`, ...).
  Separate key/value projections are fused into our `kv` (key rows first). `segformer`
  also takes the decode head (`decode_head.*`; its classifier depends on the class count);
  `classifier.*` of `mit-bX` (ImageNet) is dropped.
- `m3l` (m3l.py): M3L's snapshots, per-stream LayerNorms `ln_{m}`.
Our streams (linearfusion / tokenfusion: one per modality) share every conv and linear
and hold one LayerNorm per stream: an ImageNet LayerNorm is copied into every stream, as
M3L initialises its models. Stream models keep their decoder, mask token and TokenFusion's
score nets as built (M3L never initialises a decoder from a file).

LayerNorm epsilon: ours is 1e-6 everywhere. NVlabs' patch-embed and attention-sr norms use
1e-5 (its block and stage norms 1e-6), and HF's Segformer uses 1e-5 in every LayerNorm;
the mapping cannot change an epsilon, so the imported model differs from those references
by that alone (a few 1e-5 on random weights; a note says so).
"""

import re

import numpy as np

from ssma_tf.errors import InputError
from ssma_tf.weights import torch_layout
from ssma_tf.weights.assign import Mapping, variables_by_path
from ssma_tf.weights.importers import register_importer

MODELS = ("segformer", "linearfusion", "tokenfusion")
NVLABS_ANCHOR = "patch_embed1.proj.weight"
HF_ANCHOR = "encoder.patch_embeddings.0.proj.weight"
HF_HEAD_ANCHOR = "decode_head.linear_fuse.weight"
STREAM = re.compile(r"\.ln_(\d+)\.")

# NVlabs encoder key -> (our path under "encoder/", kind); kinds pick the layout transform
_ENCODER = [
    (r"patch_embed(\d)\.proj\.(weight|bias)", r"patch_embed\1/{}", "conv"),
    (r"patch_embed(\d)\.norm\.(weight|bias)", r"patch_norm\1/{}", "norm"),
    (r"block(\d)\.(\d+)\.norm([12])\.(weight|bias)", r"block\1_{j}/norm\3/{}", "norm"),
    (r"block(\d)\.(\d+)\.attn\.(q|kv|proj)\.(weight|bias)", r"block\1_{j}/attn/\3/{}", "dense"),
    (r"block(\d)\.(\d+)\.attn\.sr\.(weight|bias)", r"block\1_{j}/attn/sr/{}", "conv"),
    (r"block(\d)\.(\d+)\.attn\.norm\.(weight|bias)", r"block\1_{j}/attn/sr_norm/{}", "norm"),
    (r"block(\d)\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)", r"block\1_{j}/mlp/\3/{}", "dense"),
    (r"block(\d)\.(\d+)\.mlp\.dwconv\.dwconv\.(weight|bias)", r"block\1_{j}/mlp/dwconv/{}",
     "depthwise"),
    (r"norm(\d)\.(weight|bias)", r"norm\1/{}", "norm"),
]
_ENCODER = [(re.compile(pattern + "$"), target, kind) for pattern, target, kind in _ENCODER]
_VARIABLE = {"conv": {"weight": "kernel", "bias": "bias"},
             "dense": {"weight": "kernel", "bias": "bias"},
             "depthwise": {"weight": "kernel", "bias": "bias"},
             "norm": torch_layout.LAYER_NORM}
_KERNEL = {"conv": torch_layout.conv_kernel, "dense": torch_layout.dense_kernel,
           "depthwise": torch_layout.depthwise_kernel}

# HF (transformers-4 file names) -> NVlabs names, applied in order
_HF_RENAMES = [
    (r"^encoder\.patch_embeddings\.(\d)\.layer_norm\.",
     lambda m: f"patch_embed{int(m[1]) + 1}.norm."),
    (r"^encoder\.patch_embeddings\.(\d)\.", lambda m: f"patch_embed{int(m[1]) + 1}."),
    (r"^encoder\.layer_norm\.(\d)\.", lambda m: f"norm{int(m[1]) + 1}."),
    (r"^encoder\.block\.(\d)\.(\d+)\.", lambda m: f"block{int(m[1]) + 1}.{m[2]}."),
    (r"\.layer_norm_([12])\.", lambda m: f".norm{m[1]}."),
    (r"\.attention\.self\.query\.", lambda m: ".attn.q."),
    (r"\.attention\.self\.(key|value)\.", lambda m: f".attn.{m[1]}."),
    (r"\.attention\.self\.sr\.", lambda m: ".attn.sr."),
    (r"\.attention\.self\.layer_norm\.", lambda m: ".attn.norm."),
    (r"\.attention\.output\.dense\.", lambda m: ".attn.proj."),
    (r"\.mlp\.dense([12])\.", lambda m: f".mlp.fc{m[1]}."),
]
# HF decode head -> M3L decoder names
_HF_HEAD_RENAMES = [
    (r"^linear_c\.(\d)\.proj\.", lambda m: f"linear_c{int(m[1]) + 1}.proj."),
    (r"^linear_fuse\.weight$", lambda m: "linear_fuse.conv.weight"),
    (r"^batch_norm\.", lambda m: "linear_fuse.bn."),
    (r"^classifier\.", lambda m: "linear_pred."),
]


def _rename(key, renames):
    for pattern, replace in renames:
        key = re.sub(pattern, replace, key)
    return key


def encoder_of(model):
    """The model's MixTransformer layer (config: dims, depths, num_streams)."""
    return model.get_layer("encoder")


def source_structure(encoder):
    """(dims, depths) of a canonical encoder {NVlabs key: ...}."""
    dims = tuple(int(encoder[f"patch_embed{s}.proj.weight"][0].shape[0])
                 if f"patch_embed{s}.proj.weight" in encoder else 0 for s in range(1, 5))
    depths = [0, 0, 0, 0]
    for key in encoder:
        match = re.match(r"block(\d)\.(\d+)\.", STREAM.sub(".", key))
        if match:
            stage = int(match[1]) - 1
            depths[stage] = max(depths[stage], int(match[2]) + 1)
    return dims, tuple(depths)


def check_structure(encoder, model, where):
    dims, depths = source_structure(encoder)
    config = encoder_of(model).config
    want = (tuple(config["dims"]), tuple(config["depths"]))
    if (dims, depths) != want:
        raise InputError(f"{where}: the source's MiT has dims {dims} and depths {depths}, the "
                         f"model's {want[0]} and {want[1]} (choose the matching backbone "
                         f"b0..b5)")


def _norm_value(streams, num_streams, path, mapping):
    """[S, C] from the source's per-stream LayerNorm tensors {m: (value, name)}."""
    if len(streams) == 1 and num_streams > 1:
        value, name = streams[0]
        mapping.put(path, np.stack([value] * num_streams), name)
        return 1
    if sorted(streams) != list(range(num_streams)):
        raise InputError(f"{path}: the source has LayerNorms for streams {sorted(streams)}, "
                         f"the model {num_streams} stream(s) (one per modality)")
    mapping.put(path, np.stack([streams[m][0] for m in range(num_streams)]),
                *(streams[m][1] for m in range(num_streams)))
    return 0


def map_encoder(encoder, model, mapping, where):
    """Put a canonical encoder {NVlabs key (".ln_{m}." per stream): (value, (names))}."""
    check_structure(encoder, model, where)
    variables = variables_by_path(model)
    num_streams = encoder_of(model).config["num_streams"]
    norms, duplicated = {}, 0
    for key, (value, names) in encoder.items():
        stream = STREAM.search(key)
        base = STREAM.sub(".", key)
        for pattern, target, kind in _ENCODER:
            match = pattern.match(base)
            if match:
                break
        else:
            raise InputError(f"{where}: {names[0]} has no counterpart in the MiT encoder")
        variable = _VARIABLE[kind][base.rsplit(".", 1)[1]]
        path = "encoder/" + match.expand(target).replace("{}", variable)
        if base.startswith("block"):
            path = path.replace("{j}", str(int(match[2]) + 1))
        if kind == "norm":
            norms.setdefault(path, {})[int(stream[1]) if stream else 0] = (value, names[0])
        elif path.endswith("/kernel"):
            kernel = _KERNEL[kind](value)
            if path == "encoder/patch_embed1/kernel":
                torch_layout.first_layer(mapping, path, kernel, variables, *names)
            else:
                mapping.put(path, kernel, *names)
        else:
            mapping.put(path, value, *names)
    for path, streams in norms.items():
        copied = _norm_value(streams, num_streams, path, mapping)
        duplicated += copied if path.endswith("/gamma") else 0
    if duplicated:
        mapping.notes.append(f"{duplicated} LayerNorms copied into each of the model's "
                             f"{num_streams} streams")


def map_decoder(decoder, mapping):
    """Put a canonical decoder {M3L decoder key: (value, (names))}; the classifier is head."""
    for key, (value, names) in decoder.items():
        if key.endswith(torch_layout.DROPPED):
            torch_layout.drop(mapping, names)
            continue
        match = re.match(r"linear_c(\d)\.proj\.(weight|bias)$", key)
        if match:
            suffix = "kernel" if match[2] == "weight" else "bias"
            value = torch_layout.dense_kernel(value) if suffix == "kernel" else value
            mapping.put(f"decoder/linear_c{match[1]}_{suffix}", value, *names)
        elif key == "linear_fuse.conv.weight":
            mapping.put("decoder/fuse_kernel", torch_layout.pointwise_matrix(value), *names)
        elif key.startswith("linear_fuse.bn."):
            variable = torch_layout.BATCH_NORM[key.rsplit(".", 1)[1]]
            mapping.put(f"decoder/fuse_bn/{variable}", value, *names)
        elif key.startswith("linear_pred."):
            weight = key.endswith(".weight")
            path = f"decoder/classifier/{'kernel' if weight else 'bias'}"
            mapping.put(path, torch_layout.conv_kernel(value) if weight else value, *names)
            mapping.head.add(path)
        else:
            raise InputError(f"{names[0]}: no counterpart in the Segformer decoder")


def _nvlabs_prefix(source):
    return torch_layout.find_prefix(source.tensors, (NVLABS_ANCHOR,))


def _fits_nvlabs(source):
    prefix = _nvlabs_prefix(source)
    return prefix is not None and prefix + "block1.0.attn.kv.weight" in source.tensors


def _fits_hf(source):
    return torch_layout.find_prefix(source.tensors, (HF_ANCHOR,)) is not None


def map_nvlabs(source, model, config, options):
    prefix = _nvlabs_prefix(source)
    mapping = Mapping()
    encoder, dropped = {}, []
    for name in source.names(prefix):
        key = name[len(prefix):]
        if key.startswith("head."):
            dropped.append(name)
        else:
            encoder[key] = (source.tensors[name], (name,))
    torch_layout.drop(mapping, dropped, "the ImageNet classifier head.* is not imported")
    map_encoder(encoder, model, mapping, source.path)
    mapping.notes.append("LayerNorm epsilon: the source's patch-embed and attention-sr norms "
                         "used 1e-5, the model uses 1e-6")
    return mapping


def map_hf(source, model, config, options):
    prefix = torch_layout.find_prefix(source.tensors, (HF_ANCHOR,))
    head_prefix = torch_layout.find_prefix(source.tensors, (HF_HEAD_ANCHOR,))
    mapping = Mapping()
    encoder, pairs = {}, {}
    for name in source.names(prefix + "encoder."):
        key = _rename(name[len(prefix):], _HF_RENAMES)
        match = re.match(r"(.*\.attn)\.(key|value)\.(weight|bias)$", key)
        if match:
            pairs.setdefault(f"{match[1]}.kv.{match[3]}", {})[match[2]] = name
        else:
            encoder[key] = (source.tensors[name], (name,))
    for key, names in pairs.items():   # our kv: key rows first, then value rows
        encoder[key] = (np.concatenate([source.tensors[names["key"]],
                                        source.tensors[names["value"]]]),
                        (names["key"], names["value"]))
    map_encoder(encoder, model, mapping, source.path)
    root = prefix[:-len("segformer.")] if prefix.endswith("segformer.") else prefix
    torch_layout.drop(mapping, source.names(root + "classifier."),
                      "the ImageNet classifier classifier.* is not imported")
    if head_prefix is not None:
        head = source.names(head_prefix + "decode_head.")
        if config.model == "segformer":
            map_decoder({_rename(n[len(head_prefix + "decode_head."):], _HF_HEAD_RENAMES):
                         (source.tensors[n], (n,)) for n in head}, mapping)
        else:
            mapping.notes.append(f"the decode head decode_head.* ({len(head)} tensors) is "
                                 f"not imported: stream models start their decoder as built")
    mapping.notes.append("LayerNorm epsilon: the source (transformers' Segformer) used 1e-5 "
                         "in every LayerNorm, the model uses 1e-6")
    return mapping


register_importer(
    "nvlabs_mit", map_nvlabs, formats=("torch",), models=MODELS, fits=_fits_nvlabs,
    doc="NVlabs ImageNet MiT-b0..b5 (mit_bX.pth) -> the MiT encoder (LayerNorms copied per "
        "stream)")
register_importer(
    "hf_segformer", map_hf, formats=("torch", "safetensors"), models=MODELS, fits=_fits_hf,
    doc="Hugging Face nvidia/mit-bX, nvidia/segformer-bX-* (safetensors or pytorch_model.bin)"
        " -> the MiT encoder; segformer also takes the decode head")
