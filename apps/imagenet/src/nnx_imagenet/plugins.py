"""The app's plug-in builders (their registry names are in `plugin_names`). Objectives whose
constructors take objects rather than flat values (a flow map's `STSampling`) get a small builder
here that takes flat config values and builds the object.
"""

import jax.numpy as jnp
from flax import nnx

from nnx_imagenet.plugin_names import register_plugins  # noqa: F401  (re-exported)
from nnx_train import registry


def build_edm2_unet(
    *,
    size: str = "s",
    img_resolution: int = 64,
    img_channels: int = 4,
    num_classes: int = 1000,
    model_channels: int = 0,
    dropout: float = -1.0,
    label_dropout: float = 0.0,
    rngs: nnx.Rngs,
) -> nnx.Module:
    """EDM2 UNet of paper size `size` (xs..xxl); model_channels / dropout override the preset
    when ≥ 0 (0 / −1 keep it)."""
    from nnx_backbones.edm2_unet import EDM2UNet, edm2_config

    overrides = {"img_resolution": img_resolution, "img_channels": img_channels,
                 "num_classes": num_classes, "label_dropout": label_dropout}  # fmt: skip
    if model_channels > 0:
        overrides["model_channels"] = model_channels
    if dropout >= 0:
        overrides["dropout"] = dropout
    return EDM2UNet(edm2_config(size, **overrides), rngs=rngs)


def build_lsd(
    network: nnx.Module,
    *,
    interpolant: str = "linear",
    distill_weight: float = 1.0,
    time_dist: str = "uniform",
    time_mu: float = 0.0,
    time_sigma: float = 1.0,
    delta_t_span: int = 0,
    delta_t_start: float = 0.0,
    norm: str = "l2",
    loss_scale: float = 1.0,
) -> nnx.Module:
    """Lagrangian self-distillation flow map (`nnx_interfaces.flowmaps.lsd`) from flat values."""
    from nnx_interfaces.flowmaps.lsd import LagrangianSelfDistillation
    from nnx_interfaces.flowmaps.st_sampling import STSampling

    st = STSampling(
        dist=time_dist,
        mu=time_mu,
        sigma=time_sigma,
        delta_t_span=delta_t_span,
        delta_t_start=delta_t_start,
        norm=norm,
        loss_scale=loss_scale,
    )
    return LagrangianSelfDistillation(network, interpolant, distill_weight=distill_weight, st=st)


def build_repa(
    network: nnx.Module,
    *,
    base: str = "sit",
    train_time_dist_type: str = "uniform",
    encoder: str = "dinov2-vitb14",
    encoder_resolution: int = 224,
    latent_encoder: str = "sd-vae-ft-ema",
    feature_dim: int = 768,
    repa_depth: int = 8,
    repa_loss_weight: float = 0.5,
    proj_dim: int = 2048,
) -> nnx.Module:
    """REPA (`nnx_interfaces.repa.REPA`) around the interface named `base` (built on `network`).

    `encoder` names the frozen feature network whose patch tokens the hidden tokens after block
    `repa_depth` are aligned to, computed on the fly from the images resized to
    `encoder_resolution` (`nnx_imagenet.repa_features`, which also maps the images to
    `latent_encoder` latents, or keeps pixels when it is ""). REPA aligns token by token, so the
    DiT's token count must equal the encoder's, (encoder_resolution / 14)²; checked here.

    Raises:
      ConfigError: feature_dim or the token counts do not match.
    """
    from nnx_imagenet.errors import ConfigError
    from nnx_imagenet.repa_features import encoder_patch_size, feature_dim_of
    from nnx_interfaces.repa import REPA

    try:
        enc_dim = feature_dim_of(encoder)
    except Exception as e:  # a malformed name: say what is expected
        raise ConfigError(f"interface.encoder = {encoder!r}: {e}") from e
    if enc_dim != feature_dim:
        raise ConfigError(
            f"interface.feature_dim = {feature_dim} but the encoder {encoder!r} makes "
            f"{enc_dim}-channel tokens; set --config.interface.feature_dim={enc_dim}."
        )
    p = encoder_patch_size(encoder)
    if encoder_resolution % p:
        raise ConfigError(
            f"interface.encoder_resolution = {encoder_resolution} is not a multiple of the "
            f"encoder's patch size {p} (REPA uses 224)."
        )
    grid = getattr(network, "grid", None)
    n_enc = (encoder_resolution // p) ** 2
    if grid is None or grid[0] * grid[1] != n_enc:
        raise ConfigError(
            f"REPA aligns the DiT's tokens one to one with the encoder's: the network has "
            f"{'no patch grid' if grid is None else f'a {grid[0]}×{grid[1]} token grid'} but the "
            f"encoder makes ({encoder_resolution}/{p})² = {n_enc} tokens. Choose "
            f"interface.encoder_resolution = {p}·sqrt(DiT tokens) (224 for 256 tokens)."
        )
    iface = registry.build("interface", base, network, train_time_dist_type=train_time_dist_type)
    return REPA(
        iface,
        feature_dim=feature_dim,
        repa_loss_weight=repa_loss_weight,
        repa_depth=repa_depth,
        proj_dim=proj_dim,
    )


def build_scd(
    network: nnx.Module,
    *,
    teacher_config: str,
    teacher_workdir: str,
    sigma_d: float = 0.5,
    p_mean: float = -0.8,
    p_std: float = 1.6,
    tangent_warmup_steps: int = 10_000,
    tangent_norm_c: float = 0.1,
    adaptive_weight: bool = True,
) -> nnx.Module:
    """sCD (`nnx_interfaces.consistency.SCD`) distilling the newest checkpoint of a teacher run.

    The teacher (its `sample.ema` weights) is a frozen tree (`SCD.frozen_trees()`): the trainer
    keeps it without optimizer state or EMA, unchanged; only the student is trained."""
    from nnx_imagenet.errors import ConfigError
    from nnx_interfaces.consistency import SCD

    if not teacher_workdir:
        raise ConfigError(
            "sCD needs a trained teacher: set --config.interface.teacher_workdir=RUN_DIR (a "
            f"workdir trained with --config={teacher_config})."
        )
    teacher, _ = load_teacher(teacher_config, teacher_workdir)
    return SCD(
        network,
        teacher,
        sigma_d=sigma_d,
        p_mean=p_mean,
        p_std=p_std,
        tangent_warmup_steps=tangent_warmup_steps,
        tangent_norm_c=tangent_norm_c,
        adaptive_weight=adaptive_weight,
    )


def load_teacher(teacher_config: str, teacher_workdir: str = "", teacher_path: str = ""):
    """(teacher interface, its config): the `sample.ema` weights of the newest checkpoint of the
    run `teacher_workdir` trained with `teacher_config`, or a released DiT-layout checkpoint
    `teacher_path` (`nnx_backbones.convert.dit.load_dit`) into `teacher_config`'s network.

    Raises:
      ConfigError: neither or both given (says what to set).
    """
    from nnx_imagenet.checkpoints import load_latest_state
    from nnx_imagenet.config_loading import load_config
    from nnx_imagenet.errors import ConfigError
    from nnx_imagenet.sampling import interface_from_state
    from nnx_train import trainer

    if bool(teacher_workdir) == bool(teacher_path):
        raise ConfigError(
            "Distillation needs one trained teacher: set --config.interface.teacher_workdir="
            f"RUN_DIR (a workdir trained with --config={teacher_config}) or "
            "--config.interface.teacher_path=FILE (a released DiT-layout checkpoint); got "
            f"teacher_workdir={teacher_workdir!r}, teacher_path={teacher_path!r}."
        )
    if teacher_workdir:
        teacher_cfg = load_config(teacher_config, [f"workdir={teacher_workdir}"])
        _, state = load_latest_state(teacher_cfg)
        return interface_from_state(teacher_cfg, state, ema=teacher_cfg.sample.ema), teacher_cfg
    from nnx_backbones.convert.dit import load_dit

    teacher_cfg = load_config(teacher_config)
    teacher = trainer.build_interface(teacher_cfg)
    load_dit(teacher.network, teacher_path)
    return teacher, teacher_cfg


def generator_from_teacher(network: nnx.Module, teacher, teacher_cfg, teacher_config: str):
    """The teacher's interface (its config's `interface` section) around `network`, which gets
    the teacher's weights: a distilled generator's starting point.

    Raises:
      ConfigError: `network` is not the teacher's architecture.
    """
    from nnx_imagenet.errors import ConfigError
    from nnx_train import config as config_lib

    try:
        nnx.update(network, nnx.state(teacher.network, nnx.Param))
    except Exception as e:  # a different architecture: say which configs to align
        raise ConfigError(
            f"config.model must be the teacher's architecture (the generator starts from its "
            f"weights): copy the model section of --config={teacher_config}. ({e})"
        ) from e
    kwargs = config_lib.constructor_kwargs(teacher_cfg.interface)
    return registry.build("interface", teacher_cfg.interface.name, network, **kwargs)


def build_dmd(
    network: nnx.Module,
    *,
    teacher_config: str,
    teacher_workdir: str = "",
    teacher_path: str = "",
    generator_steps: int = 1,
    fake_updates: int = 5,
    guidance: float = 1.0,
    t_min: float = 0.02,
    t_max: float = 0.98,
    normalize: bool = True,
    regression_weight: float = 0.0,
    gan_weight_generator: float = 0.0,
    gan_weight_critic: float = 0.0,
    gan_hidden_at: int = 0,
    gan_t_max: float = 1.0,
) -> nnx.Module:
    """DMD / DMD2 (`nnx_interfaces.dmd.DMD`) distilling a teacher (`load_teacher`).

    The generator is the teacher's interface around `network` (config.model, which must be the
    teacher's architecture) holding the teacher's weights; the fake score a copy of it; the
    teacher frozen. The GAN head reads the tokens after block `gan_hidden_at` (0: the last),
    of the network's width; CFG's null label is the teacher's `data.num_classes`.

    Raises:
      ConfigError: config.model is not the teacher's architecture.
    """
    from nnx_interfaces.dmd import DMD

    teacher, teacher_cfg = load_teacher(teacher_config, teacher_workdir, teacher_path)
    generator = generator_from_teacher(network, teacher, teacher_cfg, teacher_config)
    use_gan = bool(gan_weight_generator or gan_weight_critic)
    depth = getattr(network, "depth", 1)
    hidden_at = (gan_hidden_at or (depth if isinstance(depth, int) else sum(depth))) or None
    channels = 0
    if use_gan:  # the width of the hidden tokens the head reads, from an abstract forward pass
        x = jnp.zeros((1, *teacher_cfg.data.shape))
        y = jnp.zeros((1,), jnp.int32) if teacher_cfg.data.num_classes else None
        _, hidden = nnx.eval_shape(
            lambda n: n(x, jnp.zeros((1,)), y=y, return_hidden_at=hidden_at), network
        )
        channels = hidden.shape[-1]
    return DMD(
        generator,
        nnx.clone(generator),
        teacher,
        generator_steps=generator_steps,
        fake_updates=fake_updates,
        guidance=guidance,
        null_label=teacher_cfg.data.num_classes if guidance != 1.0 else None,
        t_min=t_min,
        t_max=t_max,
        normalize=normalize,
        regression_weight=regression_weight,
        gan_weight_generator=gan_weight_generator,
        gan_weight_critic=gan_weight_critic,
        gan_hidden_at=hidden_at if use_gan else None,
        gan_channels=int(channels),
        gan_t_max=gan_t_max,
    )  # fmt: skip


def build_self_forcing(
    network: nnx.Module,
    *,
    teacher_config: str,
    teacher_workdir: str,
    generator_steps: int = 4,
    fake_updates: int = 5,
    guidance: float = 1.0,
    t_min: float = 0.02,
    t_max: float = 0.98,
    normalize: bool = True,
    exit_step: str = "rollout",
    context_noise: float = 0.0,
    window: int = 0,
) -> nnx.Module:
    """Self Forcing (`nnx_interfaces.self_forcing.SelfForcing`) from a Diffusion-Forcing run.

    The teacher is the `sample.ema` weights of the newest checkpoint of `teacher_workdir`
    (trained with `teacher_config`, interface `diffusion_forcing` around a causal `video_dit`),
    frozen; the generator is the teacher's interface around `network` (config.model, the
    teacher's architecture) holding its weights; the fake score a copy of it with one noise level
    per video (`noise_levels="shared"`, as in the paper). `window` (0: the network's default)
    is the rollout's KV-cache window; CFG's null label is the teacher's `data.num_classes`.

    Raises:
      ConfigError: no teacher workdir, a teacher that is not Diffusion Forcing, or config.model
        is not the teacher's architecture.
    """
    from nnx_imagenet.config_loading import load_config
    from nnx_imagenet.errors import ConfigError
    from nnx_interfaces.self_forcing import SelfForcing
    from nnx_train import config as config_lib

    if not teacher_workdir:
        raise ConfigError(
            "Self Forcing needs a trained Diffusion-Forcing teacher: set "
            f"--config.interface.teacher_workdir=RUN_DIR (a workdir trained with "
            f"--config={teacher_config})."
        )
    name = load_config(teacher_config).interface.name
    if name != "diffusion_forcing":
        raise ConfigError(
            f"Self Forcing distils a causal video model trained with interface.name = "
            f"'diffusion_forcing'; the teacher config {teacher_config!r} uses {name!r}. Use "
            f"--config.interface.teacher_config=video_demo."
        )
    teacher, teacher_cfg = load_teacher(teacher_config, teacher_workdir)
    generator = generator_from_teacher(network, teacher, teacher_cfg, teacher_config)
    fake_kwargs = {**config_lib.constructor_kwargs(teacher_cfg.interface), "noise_levels": "shared"}
    fake = registry.build("interface", "diffusion_forcing", nnx.clone(network), **fake_kwargs)
    return SelfForcing(
        generator,
        fake,
        teacher,
        generator_steps=generator_steps,
        fake_updates=fake_updates,
        guidance=guidance,
        null_label=teacher_cfg.data.num_classes if guidance != 1.0 else None,
        t_min=t_min,
        t_max=t_max,
        normalize=normalize,
        exit_step=exit_step,
        context_noise=context_noise,
        window=window or None,
    )
