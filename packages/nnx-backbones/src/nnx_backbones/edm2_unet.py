"""EDM2 UNet: the magnitude-preserving network of Karras et al., "Analyzing and Improving the
Training Dynamics of Diffusion Models" (CVPR 2024), channels-last, under the backbone contract.

Every layer keeps activations at unit magnitude (paper equation numbers in the comments):
weights are normalised per output channel and scaled by 1/√fan_in (Eq. 47), SiLU is divided by
its RMS under N(0, 1) (Eq. 81), residual sums and skip concatenations are weighted so that two
unit-magnitude inputs give a unit-magnitude output (Eqs. 88, 103), the noise embedding is a
random Fourier feature map (Eq. 75), and pixel norm replaces group norm. The forced weight
normalisation of the paper (re-normalising the stored weights after each step) is
`EDM2UNet.normalize_weights()`, to be called by the training loop after each optimizer update;
the forward pass normalises on the fly either way, so results do not depend on it.

Contract: `net(x, t, *, y=None, train=False, return_hidden_at=None)` with `x: [B, H, W, C]`
already scaled by the interface (c_in), `t = c_noise` `[B]` (EDM: ln(σ)/4), `y: [B]` int labels
with `num_classes` the null label (a zero class vector, EDM2's unconditional input).
Sizes XS..XXL (`edm2_config`) use the paper's base channels 128, 192, 256, 320, 384, 448 with
multipliers (1, 2, 3, 4), 3 blocks per level and attention at 16×16 and 8×8.
"""

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from nnx_backbones.contract import check_time
from nnx_backbones.embeddings import check_labels
from nnx_backbones.errors import ShapeError

# ---------------------------------------------------------------------------------------------
# Magnitude-preserving primitives.
# ---------------------------------------------------------------------------------------------


def normalize(x: jax.Array, axis=None, eps: float = 1e-4) -> jax.Array:
    """x / (ε + RMS(x)) over `axis` (default: all but the first axis)."""
    if axis is None:
        axis = tuple(range(1, x.ndim))
    axis = (axis,) if isinstance(axis, int) else tuple(axis)
    n = math.prod(x.shape[a] for a in axis)
    norm = jnp.sqrt(jnp.sum(jnp.square(x.astype(jnp.float32)), axis=axis, keepdims=True))
    return x / (eps + norm / math.sqrt(n)).astype(x.dtype)


def mp_silu(x: jax.Array) -> jax.Array:
    """Magnitude-preserving SiLU (Eq. 81): SiLU(x) / 0.596, unit RMS for x ~ N(0, 1)."""
    return jax.nn.silu(x) / 0.596


def mp_sum(a: jax.Array, b: jax.Array, t: float = 0.5) -> jax.Array:
    """Magnitude-preserving sum (Eq. 88): ((1 − t) a + t b) / √((1 − t)² + t²)."""
    return (a + t * (b - a)) / math.sqrt((1 - t) ** 2 + t**2)


def mp_cat(a: jax.Array, b: jax.Array, t: float = 0.5) -> jax.Array:
    """Magnitude-preserving concatenation along channels (Eq. 103)."""
    na, nb = a.shape[-1], b.shape[-1]
    c = math.sqrt((na + nb) / ((1 - t) ** 2 + t**2))
    wa = c / math.sqrt(na) * (1 - t)
    wb = c / math.sqrt(nb) * t
    return jnp.concatenate([wa * a, wb * b], axis=-1)


def resample(x: jax.Array, mode: str) -> jax.Array:
    """'down': 2×2 box filter with stride 2; 'up': nearest 2× (EDM2's filter [1, 1]); 'keep'."""
    if mode == "keep":
        return x
    if mode == "down":
        b, h, w, c = x.shape
        return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class MPFourier(nnx.Module):
    """Random Fourier features (Eq. 75): √2 cos(2π(f t + φ)), f ~ N(0, 1), φ ~ U(0, 1)."""

    def __init__(self, num_channels: int, bandwidth: float = 1.0, *, rngs: nnx.Rngs):
        kf, kp = jax.random.split(rngs.params())
        self.freqs = nnx.Variable(2 * np.pi * jax.random.normal(kf, (num_channels,)) * bandwidth)
        self.phases = nnx.Variable(2 * np.pi * jax.random.uniform(kp, (num_channels,)))

    def __call__(self, t: jax.Array) -> jax.Array:
        y = t.astype(jnp.float32)[:, None] * self.freqs[...][None, :] + self.phases[...]
        return jnp.cos(y) * np.sqrt(2)


class MPConv(nnx.Module):
    """Magnitude-preserving conv / linear (Eq. 47): w ← g · normalize(w) / √fan_in.

    `kernel=()` is a linear layer (`weight: [I, O]`); `kernel=(k, k)` a same-padded conv
    (`weight: [k, k, I, O]`). No bias.
    """

    def __init__(self, cin: int, cout: int, kernel: tuple[int, ...] = (), *, rngs: nnx.Rngs):
        self.weight = nnx.Param(jax.random.normal(rngs.params(), (*kernel, cin, cout)))

    def renormalize(self) -> None:
        """Forced weight normalisation: store unit-RMS weights per output channel."""
        w = self.weight[...]
        self.weight[...] = normalize(w, axis=tuple(range(w.ndim - 1)))

    def __call__(self, x: jax.Array, gain: float | jax.Array = 1.0) -> jax.Array:
        w = self.weight[...].astype(jnp.float32)
        w = normalize(w, axis=tuple(range(w.ndim - 1)))  # traditional weight normalisation
        w = (w * (gain / np.sqrt(math.prod(w.shape[:-1])))).astype(x.dtype)
        if w.ndim == 2:
            return x @ w
        k = w.shape[0]
        return jax.lax.conv_general_dilated(
            x, w, (1, 1), [(k // 2, k // 2)] * 2, dimension_numbers=("NHWC", "HWIO", "NHWC")
        )


class Block(nnx.Module):
    """EDM2 encoder/decoder block: resample, residual MP branch, optional MP self-attention."""

    def __init__(
        self,
        cin: int,
        cout: int,
        cemb: int,
        *,
        flavor: str = "enc",
        resample_mode: str = "keep",
        attention: bool = False,
        channels_per_head: int = 64,
        dropout: float = 0.0,
        res_balance: float = 0.3,
        attn_balance: float = 0.3,
        clip_act: float | None = 256.0,
        rngs: nnx.Rngs,
    ):
        self.out_channels = cout
        self.flavor = flavor
        self.resample_mode = resample_mode
        self.num_heads = cout // channels_per_head if attention else 0
        self.dropout = dropout
        self.res_balance = res_balance
        self.attn_balance = attn_balance
        self.clip_act = clip_act
        self.emb_gain = nnx.Param(jnp.zeros(()))
        self.conv_res0 = MPConv(cout if flavor == "enc" else cin, cout, (3, 3), rngs=rngs)
        self.emb_linear = MPConv(cemb, cout, rngs=rngs)
        self.conv_res1 = MPConv(cout, cout, (3, 3), rngs=rngs)
        self.conv_skip = MPConv(cin, cout, (1, 1), rngs=rngs) if cin != cout else None
        self.attn_qkv = MPConv(cout, 3 * cout, (1, 1), rngs=rngs) if self.num_heads else None
        self.attn_proj = MPConv(cout, cout, (1, 1), rngs=rngs) if self.num_heads else None

    def __call__(self, x: jax.Array, emb: jax.Array, dropout_key: jax.Array | None = None):
        # Main branch.
        x = resample(x, self.resample_mode)
        if self.flavor == "enc":
            if self.conv_skip is not None:
                x = self.conv_skip(x)
            x = normalize(x, axis=-1)  # pixel norm
        # Residual branch.
        y = self.conv_res0(mp_silu(x))
        c = self.emb_linear(emb, gain=self.emb_gain[...]) + 1
        y = mp_silu(y * c[:, None, None, :].astype(y.dtype))
        if dropout_key is not None and self.dropout > 0:
            keep = jax.random.bernoulli(dropout_key, 1 - self.dropout, y.shape)
            y = jnp.where(keep, y / (1 - self.dropout), 0)
        y = self.conv_res1(y)
        # Connect the branches.
        if self.flavor == "dec" and self.conv_skip is not None:
            x = self.conv_skip(x)
        x = mp_sum(x, y, t=self.res_balance)
        # Self-attention: channels laid out [head, channel, (q, k, v)] as in EDM2.
        if self.num_heads:
            b, h, w, c_ = x.shape
            qkv = self.attn_qkv(x).reshape(b, h * w, self.num_heads, c_ // self.num_heads, 3)
            qkv = normalize(qkv, axis=3)  # pixel norm per head
            q, k, v = qkv[..., 0], qkv[..., 1], qkv[..., 2]
            logits = jnp.einsum("bqhc,bkhc->bhqk", q, k / np.sqrt(q.shape[-1]))
            a = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
            y = jnp.einsum("bhqk,bkhc->bqhc", a, v).reshape(b, h, w, c_)
            x = mp_sum(x, self.attn_proj(y), t=self.attn_balance)
        if self.clip_act is not None:
            x = jnp.clip(x, -self.clip_act, self.clip_act)
        return x


# ---------------------------------------------------------------------------------------------
# Network.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EDM2Config:
    """EDM2 UNet hyper-parameters (defaults: EDM2-S on 64×64×4 ImageNet-512 latents)."""

    img_resolution: int = 64
    img_channels: int = 4
    num_classes: int = 1000  # 0 = unconditional
    model_channels: int = 192
    channel_mult: tuple[int, ...] = (1, 2, 3, 4)
    channel_mult_noise: int | None = None
    channel_mult_emb: int | None = None
    num_blocks: int = 3
    attn_resolutions: tuple[int, ...] = (16, 8)
    label_balance: float = 0.5
    concat_balance: float = 0.5
    channels_per_head: int = 64
    dropout: float = 0.0
    label_dropout: float = 0.0
    res_balance: float = 0.3
    attn_balance: float = 0.3
    clip_act: float | None = 256.0


# (model_channels, dropout) of the paper's ImageNet-512 presets.
EDM2_SIZES = {
    "xs": (128, 0.0),
    "s": (192, 0.0),
    "m": (256, 0.1),
    "l": (320, 0.1),
    "xl": (384, 0.1),
    "xxl": (448, 0.1),
}


def edm2_config(size: str, **overrides) -> EDM2Config:
    """Paper preset `size` in xs, s, m, l, xl, xxl (ImageNet-512 latents), with overrides."""
    key = size.lower()
    if key not in EDM2_SIZES:
        raise ValueError(f"EDM2 size must be one of {list(EDM2_SIZES)}; got {size!r}.")
    channels, dropout = EDM2_SIZES[key]
    return EDM2Config(**{"model_channels": channels, "dropout": dropout, **overrides})


class EDM2UNet(nnx.Module):
    """The EDM2 UNet under the backbone contract (see the module docstring)."""

    def __init__(self, config: EDM2Config = EDM2Config(), *, rngs: nnx.Rngs):
        cfg = self.config = config
        self.num_classes = cfg.num_classes
        self.rngs = rngs
        cblock = [cfg.model_channels * m for m in cfg.channel_mult]
        cnoise = cfg.model_channels * (cfg.channel_mult_noise or cfg.channel_mult[0])
        cemb = cfg.model_channels * (cfg.channel_mult_emb or max(cfg.channel_mult))
        bkw = dict(
            channels_per_head=cfg.channels_per_head,
            dropout=cfg.dropout,
            res_balance=cfg.res_balance,
            attn_balance=cfg.attn_balance,
            clip_act=cfg.clip_act,
            rngs=rngs,
        )
        self.out_gain = nnx.Param(jnp.zeros(()))
        # Embedding.
        self.emb_fourier = MPFourier(cnoise, rngs=rngs)
        self.emb_noise = MPConv(cnoise, cemb, rngs=rngs)
        self.emb_label = MPConv(cfg.num_classes, cemb, rngs=rngs) if cfg.num_classes else None
        # Encoder.
        enc, cout = {}, cfg.img_channels + 1
        for level, channels in enumerate(cblock):
            res = cfg.img_resolution >> level
            if level == 0:
                cin, cout = cout, channels
                enc[f"{res}x{res}_conv"] = MPConv(cin, cout, (3, 3), rngs=rngs)
            else:
                enc[f"{res}x{res}_down"] = Block(cout, cout, cemb, resample_mode="down", **bkw)
            for idx in range(cfg.num_blocks):
                cin, cout = cout, channels
                attn = res in cfg.attn_resolutions
                enc[f"{res}x{res}_block{idx}"] = Block(cin, cout, cemb, attention=attn, **bkw)
        # Decoder.
        skips = [b.out_channels if isinstance(b, Block) else cblock[0] for b in enc.values()]
        dec = {}
        for level, channels in reversed(list(enumerate(cblock))):
            res = cfg.img_resolution >> level
            if level == len(cblock) - 1:
                dec[f"{res}x{res}_in0"] = Block(
                    cout, cout, cemb, flavor="dec", attention=True, **bkw
                )
                dec[f"{res}x{res}_in1"] = Block(cout, cout, cemb, flavor="dec", **bkw)
            else:
                dec[f"{res}x{res}_up"] = Block(
                    cout, cout, cemb, flavor="dec", resample_mode="up", **bkw
                )
            for idx in range(cfg.num_blocks + 1):
                cin, cout = cout + skips.pop(), channels
                attn = res in cfg.attn_resolutions
                dec[f"{res}x{res}_block{idx}"] = Block(
                    cin, cout, cemb, flavor="dec", attention=attn, **bkw
                )
        self.enc_names = tuple(enc)
        self.dec_names = tuple(dec)
        self.enc = nnx.List(list(enc.values()))
        self.dec = nnx.List(list(dec.values()))
        self.out_conv = MPConv(cout, cfg.img_channels, (3, 3), rngs=rngs)

    def normalize_weights(self) -> None:
        """Forced weight normalisation (paper §2.3): call after each optimizer update."""
        for _, node in nnx.iter_graph(self):
            if isinstance(node, MPConv):
                node.renormalize()

    def __call__(
        self,
        x: jax.Array,
        t: jax.Array,
        *,
        r: jax.Array | None = None,
        y: jax.Array | None = None,
        train: bool = False,
        return_hidden_at: int | None = None,
    ) -> jax.Array | tuple[jax.Array, jax.Array]:
        """x: `[B, H, W, C]`, t = c_noise `[B]`, y: `[B]` labels → `[B, H, W, C]`.

        `return_hidden_at=k` also returns the `[B, h·w, C_k]` activations after the k-th
        encoder unit (1-based, in `enc_names` order).
        """
        cfg = self.config
        res = cfg.img_resolution
        if x.ndim != 4 or x.shape[1:] != (res, res, cfg.img_channels):
            raise ShapeError(
                f"EDM2UNet expects x of shape [B, {res}, {res}, {cfg.img_channels}]; "
                f"got {tuple(x.shape)}."
            )
        check_time(x, t)
        if r is not None:
            raise ValueError("EDM2UNet is a one-time network; it does not take r.")
        if return_hidden_at is not None and not 1 <= return_hidden_at <= len(self.enc):
            raise ValueError(f"return_hidden_at must be in 1..{len(self.enc)}.")
        b = x.shape[0]
        # Embedding.
        emb = self.emb_noise(self.emb_fourier(t))
        if self.emb_label is not None:
            labels = jnp.full((b,), self.num_classes) if y is None else y
            check_labels(labels, self.num_classes)  # eager only: one_hot would map them to null
            if train and cfg.label_dropout > 0:
                drop = jax.random.bernoulli(self.rngs.label_dropout(), cfg.label_dropout, (b,))
                labels = jnp.where(drop, self.num_classes, labels)
            onehot = jax.nn.one_hot(labels, self.num_classes, dtype=emb.dtype)  # null → zeros
            emb = mp_sum(emb, self.emb_label(onehot * np.sqrt(self.num_classes)), cfg.label_balance)
        emb = mp_silu(emb)
        key = self.rngs.dropout() if train and cfg.dropout > 0 else None

        def block_key():
            nonlocal key
            if key is None:
                return None
            key, sub = jax.random.split(key)
            return sub

        # Encoder.
        h = jnp.concatenate([x, jnp.ones_like(x[..., :1])], axis=-1)
        skips, hidden = [], None
        for k, (name, blk) in enumerate(zip(self.enc_names, self.enc, strict=True), start=1):
            h = blk(h) if name.endswith("_conv") else blk(h, emb, block_key())
            skips.append(h)
            if k == return_hidden_at:
                hidden = h.reshape(b, -1, h.shape[-1])
        # Decoder.
        for name, blk in zip(self.dec_names, self.dec, strict=True):
            if "block" in name:
                h = mp_cat(h, skips.pop(), t=cfg.concat_balance)
            h = blk(h, emb, block_key())
        out = self.out_conv(h, gain=self.out_gain[...]).astype(x.dtype)
        return out if return_hidden_at is None else (out, hidden)
