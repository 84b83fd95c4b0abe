"""The original SSMA TF1 checkpoints -> our SSMA over AdapNet++ experts.

The original keeps its two experts under `rgb/resnet_v2_50/` and `depth/resnet_v2_50/` (or
`resnet_v1_50/`), whatever the modalities are: `rgb/` becomes our first modality's expert,
`depth/` the second's, each mapped as an AdapNet++ encoder (`tf1_adapnet`, input fold included:
the original read both modalities as BGR images). The fusion blocks and the decoder sit at the
root. Its `conv513/514/552` fuse the 1/8 skips (our `ssma_skip2_*`), `conv518/519/553` the 1/4
skips (`ssma_skip1_*`); `conv550`/`conv551` re-weight them after `up1`/`up2` (our
`skip2_attention`/`skip1_attention`). SSMA checkpoints have no aux heads.
"""

from ssma_tf.errors import InputError
from ssma_tf.weights.assign import Mapping
from ssma_tf.weights.importers import register_importer
from ssma_tf.weights.tf1_adapnet import (
    DECODER,
    Tf1Names,
    encoder_options,
    map_decoder,
    map_encoder,
    rate_notes,
)

EXPERT_ROOTS = ("rgb/", "depth/")
FUSION = (("ssma_easpp_squeeze", "conv511"), ("ssma_easpp_excite", "conv512"),
          ("ssma_easpp_project", "conv515"), ("ssma_skip2_squeeze", "conv513"),
          ("ssma_skip2_excite", "conv514"), ("ssma_skip2_project", "conv552"),
          ("ssma_skip1_squeeze", "conv518"), ("ssma_skip1_excite", "conv519"),
          ("ssma_skip1_project", "conv553"), ("skip2_attention", "conv550"),
          ("skip1_attention", "conv551"))


def map_ssma(source, model, config, options):
    if config.expert != "AdapNet_pp" or len(config.modalities) != 2:
        raise InputError(f"{source.path}: an original SSMA checkpoint fuses two AdapNet++ "
                         f"experts; the config has expert {config.expert} over "
                         f"{config.modalities}")
    names, mapping = Tf1Names(source), Mapping()
    specs = options.get("specs") or {}
    for root, modality in zip(EXPERT_ROOTS, config.modalities):
        prefix = names.prefix(root)
        if prefix is None:
            raise InputError(f"{source.path}: no expert {root}resnet_v2_50/ (or "
                             f"{root}resnet_v1_50/) for modality {modality}")
        expert = model.get_layer(f"expert_{modality}")
        map_encoder(names, mapping, model, expert, root + prefix,
                    channels=int(expert.inputs[0].shape[-1]), spec=specs.get(modality),
                    **encoder_options(config))
    map_decoder(names, mapping, model, FUSION + DECODER, "", required=True)
    first, second = config.modalities
    mapping.notes.append(f"experts: rgb/ -> {first}, depth/ -> {second}")
    rate_notes(config, mapping)
    return mapping


def fits_ssma(source):
    names = Tf1Names(source)
    return names.prefix(EXPERT_ROOTS[0]) is not None and names.has("conv511/weights")


register_importer(
    "tf1_ssma", map_ssma, formats=("tf_checkpoint",), models=("SSMA",), fits=fits_ssma,
    doc="the original SSMA TF1 checkpoints (two AdapNet++ experts rgb/, depth/ and the "
        "fusion decoder), resnet_v2_50/ or resnet_v1_50/")
