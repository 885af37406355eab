"""Video DiT: the DiT of `nnx_backbones.dit` on `[B, T, H, W, C]`, one time per frame, optionally
frame-causal with a KV cache for frame-by-frame generation (Diffusion Forcing, Chen et al. 2024;
Self Forcing, Huang et al. 2025).

Frame f (0-based) of P = (H/p)·(W/p) patch tokens:
    tokens_f = PatchEmbed(x_f) + sincos_pos_embed_2d                (spatial position, as DiT)
    c_f      = SiLU(TimestepEmbedder(t_f) [+ LabelEmbedder(y)])     one time value per frame
    c        = c_f for every token of frame f                       per-token adaLN, [B, T·P, D]
    h        ← AdaLNBlock(h, c, rope_1d(f), causal_block = P if causal)   × depth
    out_f    = unpatchify(FinalLayer(h_f, c_f))                     [B, T, H, W, C]

Temporal position is a 1-D rotary embedding over the frame index (`rope_1d`, on q and k of every
head): attention scores depend on frame offsets only, and at T = 1 (frame 0, rotation = identity)
the network computes exactly the image DiT's function with the same parameters (`AdaLNBlock`,
`PatchEmbed`, `FinalLayer`, embedders are the image DiT's, built by `PatchTransformer`).

Attention is full spatio-temporal over all T·P tokens; with `causal=True` it is frame-causal:
token i sees token j iff frame(j) ≤ frame(i), so frame k's output does not depend on frames > k.

KV cache (`VideoKVCache`, explicit arrays in and out, so `step` runs under jit and `lax.scan`):
k, v `[depth, B, W·P, heads, head_dim]` hold the (rotated) keys/values of the last ≤ W context
frames right-aligned, `pos` counts the frames pushed so far. `step(x_f, t_f, cache)` runs one
frame attending to [cached frames; itself] and returns its output and the cache with this frame's
keys/values pushed (the oldest frame dropped once W frames are held: a rolling window, by
default W = num_frames − 1 so that a query never sees more than the training length). With
W ≥ T − 1, stepping through a video gives the causal full-sequence forward; with a smaller W it
gives the full forward with `window=W` (frame f sees frames f−W..f at every layer: a sliding
block mask). RoPE is relative, so frame indices past the training length are harmless. For
generation, denoise frame k with `step` (discarding its returned cache), then push the clean (or
context-noised) frame with one more `step` and keep that cache.

Temporal patch 2 (`temporal_patch=2`, 3-D patches 2×p×p): frames 2i and 2i+1 form chunk i, whose
P tokens embed both frames stacked on channels (the image layers with 2·C input channels,
frame-major; the final layer's channels are read as (mean | σ if learn_sigma, frame, C)).
Everything above then runs per chunk: the RoPE index, the causal unit and the KV-cache unit are
the chunk (`window` counts chunks), and `step` takes a chunk `[B, 2, H, W, C]` at one time
`[B]`. Per-frame times condition a chunk by the mean of its two frames' time embeddings,
c_i = SiLU(½(emb(t_2i) + emb(t_2i+1)) [+ label]), exact when the two times are equal (draw
levels per chunk: `DiffusionForcing(frames_per_level=2)`).
With T = 2 the network is the image DiT with 2·C channels on the stacked pair.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from nnx_backbones.dit import PatchTransformer, add_label_condition
from nnx_backbones.errors import ShapeError
from nnx_backbones.layers.patch import unpatchify
from nnx_backbones.layers.position import rope_1d


class VideoKVCache(NamedTuple):
    """Keys/values `[depth, B, W·P, heads, head_dim]` of the last ≤ W frames (right-aligned) and
    `pos`, the int32 number of frames pushed so far (the next frame's index)."""

    k: jax.Array
    v: jax.Array
    pos: jax.Array

    @property
    def tokens(self) -> int:
        """Token slots W·P of the window."""
        return self.k.shape[2]


class VideoDiT(PatchTransformer):
    """Spatio-temporal DiT (module docstring), class-conditional like DiT.

    Args:
      input_size: frame side `H = W` or `(H, W)`.
      num_frames: training length T (the default KV-cache window is num_frames − 1 context
        frames, or chunks; longer videos are allowed).
      causal: frame-causal attention (needed for `step` to match the full forward).
      temporal_patch: frames per token, 1 or 2 (module docstring); T must be a multiple of it.

    The other arguments (`patch_size`, `in_channels`, `hidden_size`, `depth`, `num_heads`,
    `mlp_ratio`, `num_classes`, `class_dropout_prob`, `learn_sigma`, `remat`,
    `attn_implementation`, `dtype`, `param_dtype`) are as for `DiT`.
    """

    def __init__(
        self,
        *,
        input_size: int | tuple[int, int] = 32,
        num_frames: int = 16,
        causal: bool = True,
        temporal_patch: int = 1,
        patch_size: int = 2,
        in_channels: int = 4,
        hidden_size: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        num_classes: int | None = 1000,
        class_dropout_prob: float = 0.1,
        learn_sigma: bool = False,
        remat: bool = False,
        attn_implementation: str | None = None,
        dtype: jnp.dtype = jnp.float32,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        if num_frames < 1:
            raise ValueError(f"num_frames must be ≥ 1; got {num_frames}.")
        if temporal_patch not in (1, 2) or num_frames % temporal_patch:
            raise ValueError(
                f"temporal_patch must be 1 or 2 and divide num_frames; got temporal_patch="
                f"{temporal_patch}, num_frames={num_frames}."
            )
        if (hidden_size // num_heads) % 2:
            raise ValueError(
                f"temporal RoPE needs an even head_dim; got hidden_size {hidden_size} / "
                f"num_heads {num_heads}."
            )
        super().__init__(
            input_size=input_size,
            patch_size=patch_size,
            in_channels=temporal_patch * in_channels,  # a token embeds the stacked chunk
            hidden_size=hidden_size,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            num_classes=num_classes,
            class_dropout_prob=class_dropout_prob,
            learn_sigma=learn_sigma,
            use_r=False,
            remat=remat,
            attn_implementation=attn_implementation,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )
        self.num_frames = num_frames
        self.causal = causal
        self.temporal_patch = temporal_patch
        self.in_channels = in_channels  # per frame
        self.tokens_per_frame = self.grid[0] * self.grid[1]  # per chunk when temporal_patch = 2

    # -- inputs -------------------------------------------------------------------------------

    def _frame_times(self, x: jax.Array, t: jax.Array) -> jax.Array:
        """`t: [B]` or `[B, T]` → `[B, T]` (x: `[B, T, ...]`)."""
        b, frames = x.shape[:2]
        if t.shape == (b,):
            return jnp.broadcast_to(t[:, None], (b, frames))
        if t.shape != (b, frames):
            raise ShapeError(
                f"VideoDiT expects t of shape [B] = [{b}] or [B, T] = [{b}, {frames}] (one time "
                f"per frame); got t.shape = {tuple(t.shape)}."
            )
        return t

    def _check_video(self, x: jax.Array) -> None:
        want = (*self.input_size, self.in_channels)
        if x.ndim != 5 or tuple(x.shape[2:]) != want:
            raise ShapeError(
                f"VideoDiT expects x of shape [B, T, {want[0]}, {want[1]}, {want[2]}] "
                f"(channels-last frames); got {tuple(x.shape)}. Build the network with matching "
                f"input_size / in_channels."
            )
        if x.shape[1] % self.temporal_patch:
            raise ShapeError(
                f"VideoDiT(temporal_patch={self.temporal_patch}) takes videos of whole 2-frame "
                f"chunks; got T = {x.shape[1]} frames. Use an even number of frames."
            )

    def _frame_condition(
        self, t: jax.Array, y: jax.Array | None, train: bool, dtype: jnp.dtype
    ) -> jax.Array:
        """SiLU(t-embedding + label embedding) per frame: `t: [B, T]` → `[B, T, D]` (per chunk,
        `[B, T/2, D]`, the mean of its frames' t-embeddings, when `temporal_patch = 2`)."""
        b, frames = t.shape
        c = self.t_embedder(t.reshape(-1)).reshape(b, frames, -1)
        if self.temporal_patch > 1:
            c = jnp.mean(c.reshape(b, frames // self.temporal_patch, self.temporal_patch, -1), 2)
        label = add_label_condition(self, jnp.zeros_like(c[:, 0]), t[:, 0], y, train)
        return nnx.silu(c + label[:, None]).astype(dtype)

    def _embed(self, x: jax.Array) -> jax.Array:
        """`[B, T, H, W, C]` → tokens `[B, U·P, D]` with the 2-D sin-cos position of each frame
        (U = T / temporal_patch chunks; a chunk's frames stacked on channels, frame-major)."""
        b, frames, hh, ww, ch = x.shape
        u, tp = frames // self.temporal_patch, self.temporal_patch
        if tp > 1:
            x = jnp.moveaxis(x.reshape(b, u, tp, hh, ww, ch), 2, 4)
        h = self.x_embedder(x.reshape(b * u, hh, ww, tp * ch))
        h = h + jnp.asarray(self.pos_embed(), h.dtype)
        return h.reshape(b, u * self.tokens_per_frame, -1)

    def _rope(self, frame_index: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Temporal RoPE tables for tokens of frames `frame_index: [T]` (each repeated P times)."""
        pos = jnp.repeat(frame_index, self.tokens_per_frame)
        return rope_1d(self.hidden_size // self.num_heads, pos)

    def _output(self, h: jax.Array, c: jax.Array, x: jax.Array, full_output: bool) -> jax.Array:
        b, frames = x.shape[:2]
        u, tp = frames // self.temporal_patch, self.temporal_patch
        out = self.final_layer(h, c).reshape(b * u, self.tokens_per_frame, -1)
        out = unpatchify(out, self.grid, self.patch_size)  # channels (mean|σ, frame, C)
        out = out.reshape(b, u, *x.shape[2:4], -1, tp, self.in_channels)
        out = jnp.moveaxis(out, 5, 2).reshape(b, frames, *x.shape[2:4], -1).astype(x.dtype)
        return out[..., : self.in_channels] if self.learn_sigma and not full_output else out

    # -- full sequence ------------------------------------------------------------------------

    def __call__(
        self,
        x: jax.Array,
        t: jax.Array,
        *,
        r: jax.Array | None = None,
        y: jax.Array | None = None,
        train: bool = False,
        return_hidden_at: int | None = None,
        full_output: bool = False,
        window: int | None = None,
    ) -> jax.Array | tuple[jax.Array, jax.Array]:
        """The backbone contract on videos.

        Args:
          x: `[B, T, H, W, C]`; t: `[B, T]` per-frame times in [0, 1] (or `[B]`, one for all
            frames); r: unsupported (None); y: `[B]` labels (`num_classes` = null label);
            train, return_hidden_at, full_output: as `DiT`; window: with `causal`, each frame
            (chunk) sees only the `window` frames (chunks) before it (what `step` with that
            cache computes).
        Returns:
          `[B, T, H, W, C]`, and the hidden tokens `[B, U·P, D]` after block k if asked
          (U = T / temporal_patch).
        """
        if r is not None:
            raise ValueError("VideoDiT takes one time per frame; a second time r is unsupported.")
        self._check_video(x)
        if return_hidden_at is not None and not 1 <= return_hidden_at <= self.depth:
            raise ValueError(f"return_hidden_at={return_hidden_at} not in 1..{self.depth}.")
        units = x.shape[1] // self.temporal_patch
        h = self._embed(x)
        c = jnp.repeat(
            self._frame_condition(self._frame_times(x, t), y, train, h.dtype),
            self.tokens_per_frame,
            axis=1,
        )
        rope = self._rope(jnp.arange(units))
        if window is not None and not self.causal:
            raise ValueError("window (a sliding frame-causal mask) needs causal=True.")
        block_call = functools.partial(
            _block_call,
            causal_block=self.tokens_per_frame if self.causal else None,
            causal_window=window,
        )
        if self.remat:
            block_call = nnx.remat(block_call)
        hidden = None
        for k, block in enumerate(self.blocks, start=1):
            h = block_call(block, h, c, rope)
            if k == return_hidden_at:
                hidden = h
        out = self._output(h, c, x, full_output)
        return out if hidden is None else (out, hidden)

    # -- frame by frame with a KV cache -------------------------------------------------------

    def init_cache(
        self, batch_size: int, window: int | None = None, dtype: jnp.dtype = jnp.float32
    ) -> VideoKVCache:
        """An empty cache of `window` context frames (chunks when `temporal_patch = 2`; default
        all but one of the training length, at least 1)."""
        units = self.num_frames // self.temporal_patch
        window = max(units - 1, 1) if window is None else window
        if window < 1:
            raise ValueError(f"the KV-cache window must hold ≥ 1 frame; got window={window}.")
        shape = (
            self.depth,
            batch_size,
            window * self.tokens_per_frame,
            self.num_heads,
            self.hidden_size // self.num_heads,
        )
        return VideoKVCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype), jnp.int32(0))

    def step(
        self,
        x: jax.Array,
        t: jax.Array,
        cache: VideoKVCache,
        *,
        y: jax.Array | None = None,
        full_output: bool = False,
    ) -> tuple[jax.Array, VideoKVCache]:
        """One frame `x: [B, H, W, C]` at time `t: [B]` (frame index `cache.pos`), attending to the
        cached frames and itself → `(out [B, H, W, C], cache with this frame pushed)`; with
        `temporal_patch = 2` one chunk `x: [B, 2, H, W, C]` (both frames at `t`) → `out` of the
        same shape."""
        if not self.causal:
            raise ValueError(
                "step() (KV-cache generation) needs a frame-causal network; build VideoDiT with "
                "causal=True."
            )
        video = x[:, None] if self.temporal_patch == 1 else x
        if self.temporal_patch > 1 and (x.ndim != 5 or x.shape[1] != self.temporal_patch):
            raise ShapeError(
                f"step() of VideoDiT(temporal_patch={self.temporal_patch}) takes one chunk "
                f"x: [B, {self.temporal_patch}, H, W, C]; got {tuple(x.shape)}."
            )
        self._check_video(video)
        if t.shape != (x.shape[0],):
            raise ShapeError(
                f"step() takes one time per example, t: [B] = [{x.shape[0]}]; got {tuple(t.shape)}."
            )
        if cache.k.shape[1] != x.shape[0] or cache.k.shape[0] != self.depth:
            raise ShapeError(
                f"KV cache {tuple(cache.k.shape)} does not fit a batch of {x.shape[0]} on a "
                f"depth-{self.depth} network; build it with net.init_cache({x.shape[0]})."
            )
        p = self.tokens_per_frame
        window = cache.tokens // p
        held = jnp.minimum(cache.pos, window)
        visible = jnp.repeat(jnp.arange(window) >= window - held, p)
        h = self._embed(video)
        t_frames = jnp.repeat(t[:, None], self.temporal_patch, axis=1)
        c = jnp.repeat(self._frame_condition(t_frames, y, False, h.dtype), p, axis=1)
        rope = self._rope(cache.pos[None])
        new_k, new_v = [], []
        for layer, block in enumerate(self.blocks):
            h, (k, v) = block(h, c, rope, cache=(cache.k[layer], cache.v[layer], visible))
            new_k.append(jnp.concatenate([cache.k[layer][:, p:], k.astype(cache.k.dtype)], 1))
            new_v.append(jnp.concatenate([cache.v[layer][:, p:], v.astype(cache.v.dtype)], 1))
        out = self._output(h, c, video, full_output)
        out = out[:, 0] if self.temporal_patch == 1 else out
        return out, VideoKVCache(jnp.stack(new_k), jnp.stack(new_v), cache.pos + 1)


def _block_call(block, h, c, rope, *, causal_block, causal_window):
    return block(h, c, rope, causal_block=causal_block, causal_window=causal_window)
