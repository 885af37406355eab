"""NVlabs/edm2's released networks (`training.networks_edm2.Precond`) ↔ `EDM2UNet`.

The releases (`edm2-img512-{xs..xxl}-*.pkl`) are pickles of the Precond object; its state dict
(`pickle.load(f)["ema"].state_dict()`, saved as `.safetensors`/`.npz`/`.pt`) has the keys

    unet.out_gain                                   []               → out_gain
    unet.emb_fourier.{freqs,phases}                 [C_noise]        → emb_fourier.{freqs,phases}
    unet.emb_noise.weight, unet.emb_label.weight    [out, in]        → emb_*.weight [in, out]
    unet.enc.<name>.weight                          [out, in, 3, 3]  (the first conv)
    unet.{enc,dec}.<name>.emb_gain                  []
    unet.{enc,dec}.<name>.{conv_res0,conv_res1,conv_skip,attn_qkv,attn_proj}.weight
                                                    [out, in, k, k]  → [k, k, in, out]
    unet.{enc,dec}.<name>.emb_linear.weight         [out, in]        → [in, out]
    unet.out_conv.weight                            [out, in, 3, 3]
    logvar_fourier.{freqs,phases}, logvar_linear.weight               (ignored: the uncertainty
                                                                       head of the training loss)

with <name> the block names of `EDM2UNet.enc_names` / `dec_names` (`64x64_conv`,
`32x32_down`, `8x8_in0`, `8x8_block2`, ...): the layout maps 1:1 onto ours, only transposed.
The attention's qkv channels are laid out (head, channel, q/k/v) in both. Wrap the network in
`nnx_interfaces.EDMInterface(net, x_sigma=0.5)` for the release's preconditioning (c_noise =
ln σ / 4). Pinned by nnx-interfaces/tests/test_edm2_precond.py against edm2's own Precond.
"""

import os
from collections.abc import Mapping

import numpy as np

from nnx_backbones.convert.common import load_mapped, save_mapped
from nnx_backbones.edm2_unet import EDM2UNet, MPConv
from nnx_backbones.weights.assign import CONV2D, IGNORE, LINEAR, StateMapping, export_state

LOGVAR_KEYS = ("logvar_fourier.freqs", "logvar_fourier.phases", "logvar_linear.weight")


def _conv(ckpt: str, path: str, conv: MPConv) -> dict:
    transform = LINEAR if conv.weight.get_value().ndim == 2 else CONV2D
    return {f"{ckpt}.weight": (f"{path}.weight", transform)}


def edm2_mapping(model: EDM2UNet) -> StateMapping:
    """The `{checkpoint key: entry}` mapping of an edm2 Precond state dict for this network."""
    m: dict = {
        "unet.out_gain": "out_gain",
        "unet.emb_fourier.freqs": "emb_fourier.freqs",
        "unet.emb_fourier.phases": "emb_fourier.phases",
        **_conv("unet.emb_noise", "emb_noise", model.emb_noise),
        **_conv("unet.out_conv", "out_conv", model.out_conv),
        **dict.fromkeys(LOGVAR_KEYS, IGNORE),
    }
    if model.emb_label is not None:
        m |= _conv("unet.emb_label", "emb_label", model.emb_label)
    for side, names, blocks in (
        ("enc", model.enc_names, model.enc),
        ("dec", model.dec_names, model.dec),
    ):
        for i, (name, blk) in enumerate(zip(names, blocks, strict=True)):
            ckpt, path = f"unet.{side}.{name}", f"{side}.{i}"
            if isinstance(blk, MPConv):
                m |= _conv(ckpt, path, blk)
                continue
            m[f"{ckpt}.emb_gain"] = f"{path}.emb_gain"
            for conv in ("conv_res0", "emb_linear", "conv_res1", "conv_skip", "attn_qkv"):
                if getattr(blk, conv) is not None:
                    m |= _conv(f"{ckpt}.{conv}", f"{path}.{conv}", getattr(blk, conv))
            if blk.attn_proj is not None:
                m |= _conv(f"{ckpt}.attn_proj", f"{path}.attn_proj", blk.attn_proj)
    return m


def load_edm2(
    model: EDM2UNet,
    source: str | os.PathLike | Mapping[str, np.ndarray],
    *,
    key: str | None = None,
) -> EDM2UNet:
    """Load an edm2 Precond state dict (a `.safetensors`/`.npz`/`.pt` file or the flat dict)
    into `model` (configured as the release, e.g. `edm2_config("s")`) in place, strictly: a
    `WeightsError` lists every unknown, missing and mis-shaped key and nothing is assigned."""
    return load_mapped(model, source, edm2_mapping(model), key=key)


def export_edm2(model: EDM2UNet) -> dict[str, np.ndarray]:
    """The network's weights in the edm2 Precond layout (without the logvar head)."""
    return export_state(model, edm2_mapping(model))


def save_edm2(model: EDM2UNet, path: str | os.PathLike) -> None:
    """Write `export_edm2(model)` to `.safetensors`, `.npz` or `.pt` (torch needed for .pt)."""
    save_mapped(model, edm2_mapping(model), path)
