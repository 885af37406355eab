"""Every shipped config (and its smoke preset) validates against the trainer schema; overrides
and command lines fail early with the closest valid names."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nnx_imagenet.config_loading import (
    available_configs,
    config_overrides_in_argv,
    load_config,
    resolve_config,
)
from nnx_imagenet.errors import ConfigError
from nnx_samplers import ClassifierFreeGuidance, DDPMAncestral, Euler, SpacedTimesteps
from nnx_train import callbacks, trainer

EXPECTED = {
    "digits", "dit", "dit_repa", "edm", "flowmap", "lightning_ddt_rae", "lightning_dit",
    "meanflow", "scd", "sit", "dmd2", "demo_dmd", "video_demo", "video_self_forcing",
}  # fmt: skip


def test_every_method_has_a_config():
    assert set(available_configs()) == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("preset", [None, "smoke"])
def test_config_and_smoke_preset_validate_against_trainer_schema(name, preset):
    c = load_config(name + (f":{preset}" if preset else ""))
    if preset == "smoke":
        assert c.data.global_batch_size <= 8 and c.total_steps <= 4
        if "hidden_size" in c.model:
            assert max(c.model.hidden_size if isinstance(c.model.hidden_size, tuple) else
                       (c.model.hidden_size,)) <= 128  # fmt: skip


@pytest.mark.parametrize("spec", ["edm:edm2_s", "edm:edm2_m,smoke", "dit:s2,smoke"])
def test_combined_presets_validate(spec):
    c = load_config(spec)
    assert c.model.name in ("imagenet.edm2_unet", "dit")


def test_paper_hyper_parameters_of_a_few_presets():
    sit = load_config("sit:b2")
    assert (sit.model.hidden_size, sit.model.depth, sit.model.num_heads) == (768, 12, 12)
    assert sit.optimizer.lr == 1e-4 and sit.data.global_batch_size == 256
    assert sit.ema.decays == (0.9999,)
    xl = load_config("sit")  # default preset XL/2
    assert (xl.model.hidden_size, xl.model.depth, xl.model.patch_size) == (1152, 28, 2)
    mf = load_config("meanflow:b2")
    assert (mf.interface.t_mu, mf.interface.t_sigma, mf.interface.fm_portion) == (-0.4, 1.0, 0.75)
    assert mf.model.use_r
    ddt = load_config("lightning_ddt_rae")
    assert tuple(ddt.data.shape) == (16, 16, 768) and ddt.model.depth == (28, 2)


def test_overrides_apply_with_types_and_unknown_keys_name_the_closest():
    c = load_config("demo", ["total_steps=7", "optimizer.lr=0.5", "model.width=32"])
    assert (c.total_steps, c.optimizer.lr, c.model.width) == (7, 0.5, 32)
    with pytest.raises(ConfigError, match=r"'optimizer\.lrr'.*optimizer\.lr"):
        load_config("demo", ["optimizer.lrr=1"])
    with pytest.raises(ConfigError, match=r"'model\.widht'.*model\.width"):
        load_config("demo", ["model.widht=3"])
    with pytest.raises(ConfigError, match=r"holds a float.*cannot parse 'abc'"):
        load_config("demo", ["optimizer.lr=abc"])
    with pytest.raises(ConfigError, match=r"data\.kwargs\.root"):
        load_config("demo", ["data.kwargs.rot=/x"])


def test_trainer_schema_errors_reach_the_user():
    # A type the trainer rejects after loading (strategy not one of the options).
    with pytest.raises(ConfigError, match=r"sharding\.strategy"):
        load_config("sit:smoke", ["sharding.strategy=fsdpp"])
    with pytest.raises(ConfigError, match=r"data\.name"):
        load_config("sit:smoke", ["data.name=imagenett"])


def test_local_workdirs_become_absolute_urls_stay(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    c = load_config("demo:smoke", ["workdir=runs/a"])
    assert c.workdir == str(tmp_path / "runs" / "a")
    assert load_config("demo:smoke", ["workdir=gs://b/run"]).workdir == "gs://b/run"


def test_unknown_config_and_preset_errors():
    with pytest.raises(ConfigError, match="Did you mean demo"):
        resolve_config("dmeo")
    with pytest.raises(ConfigError, match=r"Unknown preset 'xl3'.*xl2"):
        load_config("sit:xl3")
    path, preset = resolve_config("demo:short")
    assert path.name == "digits.py" and preset == "short"


def test_override_parsing_and_dataset_switch():
    assert config_overrides_in_argv(["--config.a.b=1", "--x=2", "--config.c", "3"]) == [
        "a.b=1",
        "c=3",
    ]
    # data.name switches data.kwargs to that dataset's options (shared ones kept), in any order.
    c = load_config("sit:b2", ["data.kwargs.root=/d", "data.name=image_folder",
                               "data.shape=(256, 256, 3)", "model.in_channels=3",
                               "model.input_size=256"])  # fmt: skip
    assert c.data.name == "image_folder" and c.data.kwargs.root == "/d"
    assert c.data.kwargs.split == "train" and c.data.kwargs.resolution == 256
    c = load_config("sit:smoke", ["data.name=latents", "data.kwargs.root=/shards"])
    assert dict(c.data.kwargs) == {"root": "/shards", "flip": True, "num_threads": 16}
    assert tuple(c.data.shape) == (8, 8, 4) and c.model.hidden_size == 64


def test_presets_are_listed_without_importing_jax():
    from nnx_imagenet.config_loading import config_presets

    assert config_presets("sit") == (["b2", "xl2"], "xl2")
    assert config_presets("demo") == (["full", "short"], "full")


@pytest.mark.slow
def test_dit_config_samples_with_the_paper_path_and_euler_stays_available():
    c = load_config("dit")
    sampler = trainer.build_sampler(c.sample.sampler)
    assert sampler == DDPMAncestral(
        250, schedule=SpacedTimesteps("250"), variance="learned_range", clip_denoised=False
    )
    assert (c.sample.guidance, c.sample.guidance_channels) == (1.5, 3)
    euler = load_config("dit:xl2,euler")
    assert trainer.build_sampler(euler.sample.sampler) == Euler(250)
    assert euler.sample.guidance_channels == 0

    # The configured sample_fn runs the sampler with 3-channel guidance (4 respaced steps here).
    overrides = ["sample.sampler.num_steps=4", "sample.sampler.schedule=4", "model.depth=1"]
    small = load_config("dit:s2,smoke", overrides)
    iface = trainer.build_interface(small)
    final = iface.network.final_layer  # zero-initialised: randomise so guidance shows
    leaves = nnx.state(final, nnx.Param)
    keys = iter(jax.random.split(jax.random.key(1), 16))
    nnx.update(final, jax.tree.map(lambda p: 0.3 * jax.random.normal(next(keys), p.shape), leaves))
    shape = tuple(small.data.shape)
    fn = callbacks.make_sample_fn(
        lambda: iface, trainer.build_sampler(small.sample.sampler), shape,
        guidance=small.sample.guidance, guidance_channels=small.sample.guidance_channels,
    )  # fmt: skip
    key, labels = jax.random.key(0), jnp.array([1, 2], jnp.int32)
    got = fn(key, labels, 2)
    k_init, k_sample = jax.random.split(key)
    x_init = callbacks.initial_noise(iface, k_init, (2, *shape))
    ddpm = DDPMAncestral(4, schedule="4", variance="learned_range")
    want = ddpm.sample(
        k_sample, iface, x_init, y=labels, guidance=ClassifierFreeGuidance(1.5, channels=3)
    ).x
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert np.isfinite(np.asarray(got)).all()
    all_channels = ddpm.sample(
        k_sample, iface, x_init, y=labels, guidance=ClassifierFreeGuidance(1.5)
    ).x
    assert np.abs(np.asarray(all_channels - got)).max() > 1e-3
