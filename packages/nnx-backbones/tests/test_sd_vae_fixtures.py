"""SD-VAE against golden fixtures of diffusers `AutoencoderKL` and the CompVis/ldm single file
(tools/fixtures/gen_sd_vae.py): the same seeded random weights saved in both release layouts,
diffusers' encode/decode outputs on fixed inputs. No torch needed."""

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nnx_backbones.convert.sd_vae import export_sd_vae, is_compvis, load_sd_vae, materialize
from nnx_backbones.errors import WeightsError
from nnx_backbones.sd_vae import AutoencoderKL, VAEConfig
from nnx_backbones.weights.io import read_state_dict

FIXTURES = Path(__file__).parent / "fixtures" / "sd_vae"
CFG = VAEConfig(block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4)


def loaded(tensors) -> AutoencoderKL:
    model = nnx.eval_shape(lambda: AutoencoderKL(CFG, rngs=nnx.Rngs(0)))
    materialize(model)
    load_sd_vae(model, tensors)
    return model


def close(got, want, rel=1e-4):
    want = np.asarray(want)
    np.testing.assert_allclose(np.asarray(got), want, rtol=rel, atol=rel * np.abs(want).max())


@nnx.jit
def run(m: AutoencoderKL, x, z):
    mean, logvar = m.encode(x)
    return mean, logvar, m.decode(z), m(x)


def test_diffusers_and_compvis_files_reproduce_diffusers_outputs():
    diffusers = read_state_dict(FIXTURES / "diffusers.safetensors")
    compvis = read_state_dict(FIXTURES / "compvis.safetensors")
    assert is_compvis(compvis) and not is_compvis(diffusers)
    assert (
        "encoder.mid.attn_1.q.weight" in compvis
        and "decoder.up.0.block.0.nin_shortcut.weight" in compvis
    )
    model = loaded(diffusers)
    exported = export_sd_vae(model)
    assert set(exported) == set(diffusers)
    from_compvis = export_sd_vae(loaded(compvis))
    for k in exported:
        np.testing.assert_array_equal(from_compvis[k], exported[k], err_msg=k)
    io = np.load(FIXTURES / "io.npz")
    mean, logvar, decoded, recon = run(model, jnp.asarray(io["x"]), jnp.asarray(io["z"]))
    close(mean, io["mean"])
    close(logvar, io["logvar"])
    close(decoded, io["decoded"])
    close(recon, io["reconstruction"])


def test_full_sd_checkpoint_prefix_and_training_keys():
    compvis = read_state_dict(FIXTURES / "compvis.safetensors")
    reference = export_sd_vae(loaded(compvis))
    full = {f"first_stage_model.{k}": v for k, v in compvis.items()}
    full["model.diffusion_model.input_blocks.0.0.weight"] = np.zeros((4, 4, 3, 3), np.float32)
    full["cond_stage_model.transformer.x"] = np.zeros(3, np.float32)
    full["first_stage_model.loss.logvar"] = np.zeros((), np.float32)  # ldm training loss
    again = export_sd_vae(loaded(full))
    assert all(np.array_equal(again[k], reference[k]) for k in reference)
    bad = dict(compvis)
    bad["decoder.up.0.block.0.extra.weight"] = np.zeros(3, np.float32)
    del bad["encoder.mid.attn_1.proj_out.bias"]
    with pytest.raises(WeightsError) as e:
        loaded(bad)
    assert "up_blocks.1.resnets.0.extra.weight" in str(e.value)
    assert "mid_block.attentions.0.to_out.0.bias" in str(e.value)
