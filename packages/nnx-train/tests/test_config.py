"""Config schema and registry: unknown keys / wrong types / bad values are rejected before
anything is built, with the closest valid names."""

import ml_collections
import pytest

from nnx_train import config as config_lib
from nnx_train import registry
from nnx_train.errors import ConfigError, RegistryError


def test_default_config_is_valid():
    config_lib.validate_config(config_lib.default_config())


def _error(cfg) -> str:
    with pytest.raises(ConfigError) as info:
        config_lib.validate_config(cfg)
    return str(info.value)


def test_unknown_top_level_and_nested_keys_suggest_close_names():
    cfg = config_lib.default_config()
    cfg.optimzer = ml_collections.ConfigDict({"lr": 1.0})
    cfg.checkpoint.keep_lats = 2
    msg = _error(cfg)
    assert "unknown field 'optimzer'" in msg and "Did you mean optimizer" in msg
    assert "'checkpoint.keep_lats'" in msg and "checkpoint.keep_last" in msg


def test_wrong_types_are_named_with_expected_type():
    cfg = config_lib.default_config().to_dict()
    cfg["optimizer"]["lr"] = "big"
    cfg["ema"]["warmup"] = 1
    cfg["total_steps"] = 2.5
    msg = _error(cfg)
    assert "optimizer.lr must be of type float" in msg
    assert "ema.warmup must be of type bool" in msg
    assert "total_steps must be of type int" in msg


def test_ints_are_accepted_for_floats_and_lists_for_tuples():
    cfg = config_lib.default_config().to_dict()
    cfg["optimizer"]["lr"] = 1
    cfg["ema"]["decays"] = [0.9, 0.99]
    config_lib.validate_config(cfg)


def test_constructor_kwargs_checked_against_the_registered_signature():
    cfg = config_lib.default_config().to_dict()  # plain dicts: ConfigDict would refuse the type
    cfg["model"]["widht"] = 32
    cfg["model"]["depth"] = "two"
    msg = _error(cfg)
    assert "'model.widht'" in msg and "model.width" in msg
    assert "model.depth must be int" in msg


def test_missing_required_constructor_argument_is_reported():
    cfg = config_lib.default_config()
    del cfg.model["data_shape"]
    assert "needs data_shape" in _error(cfg)


def test_bad_choices_and_values():
    cfg = config_lib.default_config()
    cfg.optimizer.schedule = "cosin"
    cfg.sharding.strategy = "zero3"
    cfg.data.global_batch_size = 10
    cfg.train.grad_accum = 4
    cfg.ema.decays = (1.5,)
    msg = _error(cfg)
    assert "Did you mean 'cosine'" in msg
    assert "sharding.strategy = 'zero3'" in msg
    assert "not divisible by train.grad_accum = 4" in msg
    assert "ema.decays must lie in (0, 1)" in msg


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("optimizer.lr", -1e-4, "optimizer.lr must be finite and > 0"),
        ("optimizer.lr", float("nan"), "optimizer.lr must be finite and > 0"),
        ("optimizer.lr", 0.0, "optimizer.lr must be finite and > 0"),
        ("sample.guidance", -1.0, "sample.guidance must be a finite scale w ≥ 0"),
        ("sample.guidance", float("inf"), "sample.guidance must be a finite scale w ≥ 0"),
        ("optimizer.warmup_steps", -5, "optimizer.warmup_steps must be a finite number ≥ 0"),
        ("optimizer.min_lr_ratio", 1.5, "optimizer.min_lr_ratio must lie in [0, 1]"),
        ("checkpoint.keep_last", 0, "checkpoint.keep_last must be ≥ 1"),
        ("eval.every_steps", -1, "eval.every_steps must be a finite number ≥ 0"),
        ("sample.ema", "0.5", "sample.ema = '0.5' must be '' (raw weights) or one of ema.decays"),
        ("eval.ema", "abc", "eval.ema = 'abc' must be ''"),
    ],
)
def test_values_out_of_range_are_rejected_with_the_reason(path, value, expected):
    cfg = config_lib.default_config()
    section, key = path.split(".")
    cfg[section][key] = value
    assert expected in _error(cfg)
    cfg.sample.sampler.num_steps = 0  # an open section's value, checked too
    assert "sample.sampler.num_steps must be ≥ 1" in _error(cfg)


def test_validation_without_constructors_imports_no_jax():
    import subprocess
    import sys

    code = (
        "import sys; from nnx_train import config as c; cfg = c.default_config();"
        "cfg.model.name = 'mlpp'; cfg.optimizer.lr = -1.0\n"
        "try:\n c.validate_config(cfg, check_constructors=False)\n"
        "except Exception as e: print(type(e).__name__, e)\n"
        "print(sorted(m for m in ('jax', 'flax', 'orbax', 'optax') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "Unknown model name 'mlpp'. Did you mean 'mlp'" in out.stdout
    assert "optimizer.lr must be finite and > 0" in out.stdout
    assert out.stdout.strip().endswith("[]")


def test_registry_unknown_name_and_custom_registration():
    with pytest.raises(RegistryError, match="Did you mean 'dit'"):
        registry.resolve("model", "dti")
    registry.register("sampler", "my_sampler", dict)
    assert registry.resolve("sampler", "my_sampler") is dict
    cfg = config_lib.default_config()
    cfg.model.name = "no_such_net"
    assert "Unknown model name 'no_such_net'" in _error(cfg)


def test_video_dit_is_registered():
    from nnx_backbones import VideoDiT

    assert registry.resolve("model", "video_dit") is VideoDiT
    assert {"num_frames", "causal"} <= set(registry.accepted_kwargs("model", "video_dit"))


def test_diff_configs_lists_dotted_paths():
    a = {"model": {"width": 1, "depth": 2}, "seed": 0}
    b = {"model": {"width": 3, "depth": 2}, "seed": 0, "x": 1}
    assert config_lib.diff_configs(a, b) == ["model.width", "x"]
