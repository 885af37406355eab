"""Every shipped config (and its smoke preset) validates against the trainer schema; overrides
and command lines fail early with the closest valid names."""

import pytest

from nnx_imagenet.cli import preprocess_argv
from nnx_imagenet.config_loading import (
    available_configs,
    config_overrides_in_argv,
    load_config,
    resolve_config,
)
from nnx_imagenet.errors import AppError, ConfigError

EXPECTED = {
    "digits", "dit", "dit_repa", "edm", "flowmap", "lightning_ddt_rae", "lightning_dit",
    "meanflow", "scd", "sit", "dmd2", "demo_dmd",
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


def test_command_line_is_checked_before_absl_runs():
    assert config_overrides_in_argv(["--config.a.b=1", "--x=2", "--config.c", "3"]) == [
        "a.b=1",
        "c=3",
    ]
    with pytest.raises(AppError, match="Expected a command"):
        preprocess_argv(["nnx-imagenet", "trian", "--config=demo"])
    with pytest.raises(AppError, match="needs --config"):
        preprocess_argv(["nnx-imagenet", "train"])
    with pytest.raises(ConfigError, match=r"optimizer\.lr"):
        preprocess_argv(["nnx-imagenet", "train", "--config=demo", "--config.optimizer.lrr=1"])
    out = preprocess_argv(["nnx-imagenet", "train", "--config", "demo:short"])
    assert out[2].startswith("--config=/") and out[2].endswith("digits.py:short")
