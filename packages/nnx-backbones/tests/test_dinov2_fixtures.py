"""DINOv2 against golden fixtures of the real references (tools/fixtures/gen_dinov2.py):
transformers `Dinov2Model` / `Dinov2WithRegistersModel` (HF hub names and the in-memory
`state_dict()` names) and the original facebookresearch/dinov2 hub model (EDM2's FD-DINOv2
network), each at two resolutions. Seeded random weights, tiny configs; no torch needed."""

from dataclasses import replace
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nnx_backbones.convert.dinov2 import export_dinov2, load_dinov2, to_hf_layout
from nnx_backbones.convert.sd_vae import materialize
from nnx_backbones.dinov2 import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DINOv2,
    DINOv2Config,
    dinov2_config,
)
from nnx_backbones.weights.io import read_state_dict

FIXTURES = Path(__file__).parent / "fixtures" / "dinov2"
HF = {
    "plain": DINOv2Config(hidden_size=16, depth=2, num_heads=2, image_size=98),
    "reg": DINOv2Config(
        hidden_size=16, depth=2, num_heads=2, image_size=98, num_registers=4, swiglu=True
    ),
}
HUB = {  # as dinov2_vitl14 / dinov2_vitl14_reg, at width 16
    "plain": DINOv2Config(hidden_size=16, depth=2, num_heads=2, interpolate_offset=0.1),
    "reg": DINOv2Config(hidden_size=16, depth=1, num_heads=2, num_registers=4),
}


def normalise(images: np.ndarray) -> jnp.ndarray:
    """uint8 → ImageNet-normalised float32, rounded exactly as the generator does."""
    x = (images / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    return jnp.asarray(x.astype(np.float32))


def loaded(cfg: DINOv2Config, tensors) -> DINOv2:
    model = nnx.eval_shape(lambda: DINOv2(cfg, rngs=nnx.Rngs(0)))
    materialize(model)
    load_dinov2(model, tensors)
    return model


@nnx.jit
def forward(model: DINOv2, x):
    """Normalised pixels → output with every layer's hidden tokens (one compile per shape)."""
    return model(x, input_range=None, layers=tuple(range(1, model.config.depth + 1)))


def close(got, want, rel=1e-4):
    """Elementwise within `rel` of the reference's largest magnitude (f32 rounding)."""
    want = np.asarray(want)
    assert np.shape(got) == want.shape
    if want.size == 0:
        return
    np.testing.assert_allclose(np.asarray(got), want, rtol=rel, atol=rel * np.abs(want).max())


@pytest.mark.parametrize("name", ["plain", "reg"])
def test_transformers_dinov2_both_layouts_and_two_resolutions(name):
    cfg, io = HF[name], np.load(FIXTURES / f"hf_{name}.npz")
    hub_names = read_state_dict(FIXTURES / f"hf_{name}.safetensors")
    in_memory = read_state_dict(FIXTURES / f"hf_{name}_state_dict.safetensors")
    assert any(".q_proj." in k for k in in_memory) and not any(".q_proj." in k for k in hub_names)
    model = loaded(cfg, hub_names)
    exported = export_dinov2(model)
    assert set(exported) == set(hub_names)
    again = export_dinov2(loaded(cfg, in_memory))  # torch.save(model.state_dict()) layout
    assert all(np.array_equal(again[k], exported[k]) for k in exported)
    r = cfg.num_registers
    for tag in ("a", "b"):
        out = forward(model, normalise(io[f"{tag}_images"]))
        ref = io[f"{tag}_last_hidden_state"]
        close(out.cls_token, ref[:, 0])
        close(out.register_tokens, ref[:, 1 : 1 + r])
        close(out.patch_tokens, ref[:, 1 + r :])
        for got, want in zip(out.hidden, io[f"{tag}_hidden_states"], strict=True):
            close(got, want)


@pytest.mark.parametrize("name", ["plain", "reg"])
def test_original_hub_dinov2_two_resolutions(name):
    cfg, io = HUB[name], np.load(FIXTURES / f"hub_{name}.npz")
    tensors = read_state_dict(FIXTURES / f"hub_{name}.safetensors")
    assert "blocks.0.attn.qkv.weight" in tensors and "blocks.0.ls1.gamma" in tensors
    model = loaded(cfg, tensors)
    for tag in ("a", "b"):
        out = forward(model, normalise(io[f"{tag}_images"]))
        close(out.cls_token, io[f"{tag}_x_norm_clstoken"])
        close(out.register_tokens, io[f"{tag}_x_norm_regtokens"])
        close(out.patch_tokens, io[f"{tag}_x_norm_patchtokens"])
        close(out.hidden[-1], io[f"{tag}_x_prenorm"])
    if name == "plain":  # HF's resize (offset 0) is not the hub model's: the old behaviour fails
        hf_style = loaded(replace(cfg, interpolate_offset=0.0), tensors)
        out = forward(hf_style, normalise(io["a_images"]))
        ref = io["a_x_norm_patchtokens"]
        assert np.abs(np.asarray(out.patch_tokens) - ref).max() > 1e-2 * np.abs(ref).max()


def test_hub_layout_round_trip_and_chunked_blocks():
    tensors = read_state_dict(FIXTURES / "hub_plain.safetensors")
    hf = export_dinov2(loaded(HUB["plain"], tensors))
    # qkv [3D, D] is split in q, k, v order; ls1.gamma becomes layer_scale1.lambda1.
    qkv = tensors["blocks.1.attn.qkv.weight"]
    np.testing.assert_array_equal(hf["encoder.layer.1.attention.attention.key.weight"], qkv[16:32])
    np.testing.assert_array_equal(
        hf["encoder.layer.0.layer_scale1.lambda1"], tensors["blocks.0.ls1.gamma"]
    )
    # Training checkpoints with block_chunks=1 name blocks `blocks.0.N.`.
    chunked = {
        (f"blocks.0.{k[7:]}" if k.startswith("blocks.") else k): v for k, v in tensors.items()
    }
    assert to_hf_layout(chunked).keys() == hf.keys()
    # Dinov2ForImageClassification prefix + a torch-saved in-memory SwiGLU split both resolve.
    mem = read_state_dict(FIXTURES / "hf_reg_state_dict.safetensors")
    prefixed = {f"dinov2.{k}": v for k, v in mem.items()}
    np.testing.assert_array_equal(
        to_hf_layout(prefixed)["encoder.layer.0.mlp.weights_in.weight"],
        np.concatenate(
            [mem["encoder.layer.0.mlp.gate_proj.weight"], mem["encoder.layer.0.mlp.up_proj.weight"]]
        ),
    )


def test_interpolation_option_of_released_configs():
    assert dinov2_config("l").interpolate_offset == 0.0
    assert dinov2_config("l", interpolation="original").interpolate_offset == 0.1
    # The hub models with registers resize by size with antialias, exactly as HF.
    reg = dinov2_config("l", registers=True, interpolation="original")
    assert reg.interpolate_offset == 0.0 and reg.antialias
    with pytest.raises(ValueError, match="interpolation"):
        dinov2_config("l", interpolation="timm")
