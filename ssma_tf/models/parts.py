"""The contract between a unimodal model and SSMA's fusion: the model's encoder and decoder.

A model family that can serve as SSMA's experts registers `expert=ExpertParts(...)`:
- `build_encoder(channels, *, name, **encoder options)` -> keras.Model from one image to a
  dict of named features; the unimodal model nests it as the layer "encoder", so a stage-1
  checkpoint's encoder copies 1:1 into SSMA's "expert_<modality>";
- `decode(features, reference, num_classes, *, fused, **decoder options)` -> the output dict
  at `reference`'s size; SSMA calls it on the fused features (same keys and channels) with
  `fused=True`;
- `context`: the deepest feature's key (SSMA fuses it with its larger bottleneck and a BN
  projection; the other keys are skip features);
- `loss_weights(outputs)` -> {output: supervised loss weight}.
"""

import dataclasses
from typing import Callable


@dataclasses.dataclass(frozen=True)
class ExpertParts:
    build_encoder: Callable
    decode: Callable
    encoder_args: tuple
    decoder_args: tuple
    context: str
    loss_weights: Callable

    def split(self, options):
        """(encoder options, decoder options) from a model's builder options."""
        unknown = set(options) - set(self.encoder_args) - set(self.decoder_args)
        if unknown:
            raise TypeError(f"options {sorted(unknown)} are neither encoder nor decoder options")
        return ({k: v for k, v in options.items() if k in self.encoder_args},
                {k: v for k, v in options.items() if k in self.decoder_args})
