"""M3L's checkpoints -> `linearfusion` (and its single-modality SegFormer -> `segformer`).

M3L saves whole training snapshots: {'model_state_dict': ..., 'optimizer_state_dict': ...,
'iter' or 'epoch', 'current_idx'}; the mean-teacher and M3L runs hold two models,
`student.` and `teacher.` (`options["branch"]`, default "teacher": the EMA model, the one
its evaluation reports); supervised-only runs and `model_sup_final*.pth` hold one model
without either prefix. Inside (`WeTrLinearFusion`): shared layers carry `.module.`,
per-modality LayerNorms `.ln_{m}.` (m = position in the model's modalities: rgb 0, depth 1),
the decoder `decoder.linear_c{k}`, `linear_fuse.conv/bn`, `linear_pred` (the classifier,
class-count dependent) and the ensemble's `alpha` (kept at ones by M3L). The masked
variant's `patch_embed1.mask_token` is our `encoder/mask_token`; stages 2-4's tokens never
act in M3L and have no counterpart. All LayerNorm epsilons are 1e-6, as ours. The optimizer
state, the other branch and `num_batches_tracked` are dropped.
"""

import re

from ssma_tf.errors import InputError
from ssma_tf.weights import torch_layout
from ssma_tf.weights.assign import Mapping, variables_by_path
from ssma_tf.weights.importers import register_importer
from ssma_tf.weights.mit import map_decoder, map_encoder

ANCHOR = "encoder.patch_embed1.proj.module.weight"
BRANCHES = ("teacher", "student")


def _roots(source):
    """{branch or "": the prefix of that model's keys}."""
    roots = {}
    for name in source.tensors:
        if name.endswith(ANCHOR):
            prefix = name[:-len(ANCHOR)]
            match = re.search(r"(student|teacher)\.$", prefix)
            roots[match[1] if match else ""] = prefix
    return roots


def _fits(source):
    return bool(_roots(source))


def _prefix(source, options, mapping):
    roots = _roots(source)
    branch = options.get("branch") or "teacher"
    if branch not in BRANCHES:
        raise InputError(f"branch: expected one of {BRANCHES}, got {branch!r}")
    if "" in roots and len(roots) == 1:
        if options.get("branch"):
            mapping.notes.append(f"{source.path} holds one model (no student/teacher): "
                                 f"branch {branch} does not apply")
        return roots[""]
    if branch not in roots:
        raise InputError(f"{source.path}: no {branch}. model in the snapshot (it has "
                         f"{', '.join(sorted(roots))})")
    mapping.notes.append(f"imported the {branch} (branch: {branch})")
    return roots[branch]


def map_m3l(source, model, config, options):
    mapping = Mapping()
    prefix = _prefix(source, options, mapping)
    variables = variables_by_path(model)
    encoder, decoder = {}, {}
    for name in source.names(prefix):
        key = name[len(prefix):].replace(".module.", ".")
        if key.startswith("encoder.patch_embed") and key.endswith(".mask_token"):
            if key == "encoder.patch_embed1.mask_token" and "encoder/mask_token" in variables:
                mapping.put("encoder/mask_token", source.tensors[name], name)
            else:
                torch_layout.drop(mapping, [name], f"{key} has no counterpart")
        elif key.startswith("encoder."):
            encoder[key[len("encoder."):]] = (source.tensors[name], (name,))
        elif key.startswith("decoder."):
            decoder[key[len("decoder."):]] = (source.tensors[name], (name,))
        elif key == "alpha":
            if "split_streams/alpha" in variables:
                mapping.put("split_streams/alpha", source.tensors[name], name)
            else:
                torch_layout.drop(mapping, [name], "alpha not imported: the model's ensemble "
                                                   "is the plain mean (M3L's alpha stays 1, 1)")
        else:
            raise InputError(f"{source.path}: {name} is not part of M3L's model")
    map_encoder(encoder, model, mapping, source.path)
    map_decoder(decoder, mapping)
    rest = sorted(set(source.tensors) - set(source.names(prefix)))
    torch_layout.drop(mapping, rest, "not imported: the optimizer state and any other model "
                                     "in the snapshot")
    return mapping


register_importer(
    "m3l", map_m3l, formats=("torch",), models=("linearfusion", "segformer"), fits=_fits,
    doc="M3L snapshots (model_state_dict, student./teacher., WeTrLinearFusion) -> linearfusion;"
        " options branch: teacher (default) | student")
