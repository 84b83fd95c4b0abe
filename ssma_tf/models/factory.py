"""build_model(config): dispatch on config.model to the builders (imported lazily)."""

from ssma_tf.errors import ConfigError

DEFAULT_CHANNELS = {"depth": 1}     # raw depth; every other modality is 3-channel


def default_channels(modalities):
    """{modality: channels} when no records are at hand (raw depth 1, else 3)."""
    return {m: DEFAULT_CHANNELS.get(m, 3) for m in modalities}


def _single(config, channels):
    if len(config.modalities) != 1:
        raise ConfigError(f"{config.source}: key 'modalities': model {config.model} takes one "
                          f"modality, got {config.modalities}")
    modality = config.modalities[0]
    return modality, channels[modality]


def freeze_experts(model):
    """Make every nested `expert_*` encoder non-trainable (its BN then runs in inference)."""
    for layer in model.layers:
        if layer.name.startswith("expert_"):
            layer.trainable = False


def build_model(config, channels=None):
    """The keras.Model named by config.model; `channels` = {modality: C} (default per name)."""
    if config.num_classes is None:
        raise ConfigError(f"{config.source}: key 'num_classes' is required")
    channels = {**default_channels(config.modalities), **(channels or {})}
    multi = {m: channels[m] for m in config.modalities}
    kind = config.model.lower()
    if kind == "adapnet_pp":
        from ssma_tf.models.adapnet_pp import build_adapnet_pp
        modality, c = _single(config, channels)
        return build_adapnet_pp(
            config.num_classes, modality, c, width=config.width_multiplier,
            units=tuple(config.backbone_units), rates=config.rates,
            easpp_rates=tuple(config.easpp_rates), aux_heads=config.aux_loss,
            dropout=config.dropout)
    if kind == "ssma":
        from ssma_tf.models.ssma import build_ssma
        model = build_ssma(config.num_classes, multi, width=config.width_multiplier,
                           units=tuple(config.backbone_units), rates=config.rates,
                           easpp_rates=tuple(config.easpp_rates))
        if config.freeze_experts:
            freeze_experts(model)
        return model
    if kind == "segformer":
        from ssma_tf.models.segformer import build_segformer
        modality, c = _single(config, channels)
        return build_segformer(config.num_classes, modality, c, variant=config.backbone,
                               decoder_dim=config.decoder_dim)
    if kind == "linearfusion":
        from ssma_tf.models.linear_fusion import build_linear_fusion
        return build_linear_fusion(config.num_classes, multi, variant=config.backbone,
                                   ratio=config.fusion_ratio, decoder_dim=config.decoder_dim,
                                   ensemble=config.ensemble)
    if kind == "tokenfusion":
        from ssma_tf.models.token_fusion import build_token_fusion
        return build_token_fusion(config.num_classes, multi, variant=config.backbone,
                                  ratio=config.fusion_ratio, decoder_dim=config.decoder_dim,
                                  ensemble=config.ensemble)
    raise ConfigError(f"{config.source}: key 'model': unknown model {config.model!r}")
