"""Distribution matching distillation: DMD (Yin et al. 2023, "One-step Diffusion with
Distribution Matching Distillation", arXiv:2311.18828) and DMD2 (Yin et al. 2024, "Improved
Distribution Matching Distillation for Fast Image Synthesis", arXiv:2405.14867).

Three models, all interfaces of the same kind as the teacher (any affine-path `Interfaces` with
`alpha_sigma` and `denoise`: SiT, EDM, DDPM, ...), in the teacher's time variable t:

    generator  G_θ        trained; initialised from the teacher; a sample is its denoiser at the
                          noise end, x = G_θ(z) = x̂_θ(σ(T)·z, T), z ~ N(0, I)
    real score x̂_real    the teacher, frozen (with classifier-free guidance of scale w:
                          x̂_real = x̂(x_t, ∅) + w·(x̂(x_t, y) − x̂(x_t, ∅)))
    fake score x̂_fake    trained by its own denoising loss on generator samples, sg(G_θ(z))

Scores follow from denoisers by Tweedie on x_t = α_t·x + σ_t·n: s(x_t) = (α_t·x̂ − x_t)/σ_t².

Distribution matching (DMD Eq. 7): with x_t = α_t·G_θ(z) + σ_t·n, the gradient of the KL between
the diffused generator and data distributions is

    ∇_θ KL(p_θ,t ‖ p_t) = α_t·E[(s_fake(x_t) − s_real(x_t))·∂G_θ/∂θ]
                        = (α_t²/σ_t²)·E[(x̂_fake − x̂_real)·∂G_θ/∂θ].

DMD2's generator step descends E_t[g·∂G_θ/∂θ] with the normalised difference

    g = (x̂_fake − x̂_real) / w,   w = mean_{pixels} |x − x̂_real|             (DMD Eq. 8)

(w ≡ 1 with `normalize=False`: then the step is E_t[(σ_t²/α_t²)·∇_θ KL_t]/D, D = elements of one
sample), implemented as the surrogate whose gradient in x is g/D:

    L_DM = ½·mean‖x − sg(x − g)‖²,   x = G_θ(z),   t ~ U[t_min, t_max] (fractions of the grid).

Fake score (DMD Eq. 6): L_fake = the fake interface's own denoising loss on sg(G_θ(z)).

Options:
- DMD1 regression (`regression_weight` > 0): + λ_reg·mean‖G_θ(z_pair) − x_pair‖² on pairs of
  noise and the teacher's ODE output passed in the batch as `reg_noise`, `reg_target` (DMD uses
  LPIPS; this is the MSE).
- DMD2 GAN (`gan_weight_generator`, `gan_weight_critic` > 0): a small classifier head D on the
  fake score network's hidden tokens (block `gan_hidden_at`) at diffused inputs x_t (t ~
  U[0, gan_t_max], DMD2's "diffusion GAN"), non-saturating:
      L_G += λ_G·mean softplus(−D(x_t(G_θ(z))))
      L_D += λ_D·mean [softplus(D(x_t(sg G_θ(z)))) + softplus(−D(x_t(x_data)))].
- K-step generator (`generator_steps` = K): times t_0 = T > t_1 > … > t_{K−1} evenly spaced on
  the grid; sampling alternates x̂ = G_θ(x_k, t_k) and x_{k+1} = α·x̂ + σ·n (fresh noise). DMD2's
  backward simulation trains on the generator's own intermediate states: each example draws
  k ~ U{0..K−1}, runs k steps without gradient, and x = G_θ(x_k, t_k) is its training sample.
- Two time-scale update rule (DMD2 Sec. 4.2): the critic (fake score and head) is updated in every
  step, the generator in every `fake_updates`-th (DMD2: 5), each with its own optimizer
  (`trained_trees()`), the teacher frozen (`frozen_trees()`).

Time grid: u ∈ [0, 1] ↦ t, linear from the data end (`last_eval`) to the noise end, or for EDM's
σ the Karras grid σ = (σ_min^{1/ρ} + u·(σ_max^{1/ρ} − σ_min^{1/ρ}))^ρ, ρ = 7 (DMD2's EDM grid).
"""

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from nnx_interfaces.base import Interfaces, TimeDomain, TreeUpdate
from nnx_interfaces.errors import InterfaceConfigError

RHO = 7.0


class ClassifierHead(nnx.Module):
    """DMD2's realism classifier: hidden tokens `[B, N, C]` (or `[B, C]`) → mean over tokens →
    LayerNorm → Linear(C, C) → SiLU → Linear(C, 1) → logits `[B]`."""

    def __init__(self, channels: int, *, rngs: nnx.Rngs):
        self.norm = nnx.LayerNorm(channels, rngs=rngs)
        self.hidden = nnx.Linear(channels, channels, rngs=rngs)
        self.out = nnx.Linear(channels, 1, rngs=rngs)

    def __call__(self, tokens: jax.Array) -> jax.Array:
        h = tokens.astype(jnp.float32)
        h = jnp.mean(h, axis=tuple(range(1, h.ndim - 1))) if h.ndim > 2 else h
        return self.out(jax.nn.silu(self.hidden(self.norm(h))))[:, 0]


class Critic(nnx.Module):
    """What the critic update trains: the fake score and (DMD2) the classifier head."""

    def __init__(self, fake: Interfaces, head: ClassifierHead | None = None):
        self.fake = fake
        self.head = head


class DMD(Interfaces):
    """DMD / DMD2 distillation of `teacher` into a 1- or K-step generator (module docstring).

    Args:
      generator: the generator interface (initialised from the teacher's weights).
      fake: the fake score interface (a copy of the teacher; trained).
      teacher: the real score, frozen.
      generator_steps: K (1: one-step generator).
      fake_updates: critic updates per generator update (TTUR; DMD2: 5).
      guidance: CFG scale w of the real score (1: none); needs labels and `null_label`.
      null_label: the null class (by convention `num_classes`).
      t_min, t_max: the distribution-matching times, as fractions of the grid (DMD2: 0.02, 0.98).
      normalize: divide by w = mean|x − x̂_real| (DMD's normaliser).
      regression_weight: λ_reg of the DMD1 regression loss (0: off).
      gan_weight_generator, gan_weight_critic: λ_G, λ_D of the DMD2 GAN (DMD2 ImageNet: 3e-3,
        1e-2); both 0: no head.
      gan_hidden_at: block whose hidden tokens the head reads (backbone `return_hidden_at`).
      gan_channels: channels of those tokens.
      gan_t_max: diffusion-GAN noise, as the largest fraction of the grid.
      head_seed: seed of the classifier head's initialisation.
      rngs: streams `noise`, `time` (default: the generator's).
    """

    def __init__(
        self,
        generator: Interfaces,
        fake: Interfaces,
        teacher: Interfaces,
        *,
        generator_steps: int = 1,
        fake_updates: int = 5,
        guidance: float = 1.0,
        null_label: int | None = None,
        t_min: float = 0.02,
        t_max: float = 0.98,
        normalize: bool = True,
        regression_weight: float = 0.0,
        gan_weight_generator: float = 0.0,
        gan_weight_critic: float = 0.0,
        gan_hidden_at: int | None = None,
        gan_channels: int = 0,
        gan_t_max: float = 1.0,
        head_seed: int = 0,
        rngs: nnx.Rngs | None = None,
    ):
        for name, iface in (("generator", generator), ("fake", fake), ("teacher", teacher)):
            if not isinstance(iface, Interfaces):
                raise InterfaceConfigError(
                    f"DMD's {name} must be an Interfaces (with alpha_sigma and denoise); got "
                    f"{type(iface).__name__}."
                )
        if generator_steps < 1 or fake_updates < 1:
            raise InterfaceConfigError(
                f"generator_steps and fake_updates must be ≥ 1; got {generator_steps}, "
                f"{fake_updates}."
            )
        if not 0.0 <= t_min < t_max <= 1.0 or not 0.0 < gan_t_max <= 1.0:
            raise InterfaceConfigError(
                f"need 0 ≤ t_min < t_max ≤ 1 and 0 < gan_t_max ≤ 1 (fractions of the time grid); "
                f"got t_min={t_min}, t_max={t_max}, gan_t_max={gan_t_max}."
            )
        if guidance != 1.0 and null_label is None:
            raise InterfaceConfigError(
                f"guidance = {guidance} needs null_label (the null class, by convention "
                f"num_classes) for the unconditional branch of the real score."
            )
        use_gan = gan_weight_generator > 0 or gan_weight_critic > 0
        if use_gan and (gan_hidden_at is None or gan_channels < 1):
            raise InterfaceConfigError(
                "the DMD2 GAN reads the fake score network's hidden tokens: set gan_hidden_at "
                "(a block index of the backbone) and gan_channels (their width)."
            )
        self.rngs = rngs if rngs is not None else generator.rngs
        self.train_time_dist_type = teacher.train_time_dist_type
        self.generator = generator
        head = ClassifierHead(gan_channels, rngs=nnx.Rngs(head_seed)) if use_gan else None
        self.critic = Critic(fake, head)
        self.teacher = teacher
        self.generator_steps, self.fake_updates = int(generator_steps), int(fake_updates)
        self.guidance, self.null_label = float(guidance), null_label
        self.t_min, self.t_max, self.normalize = float(t_min), float(t_max), bool(normalize)
        self.regression_weight = float(regression_weight)
        self.gan_weight_generator = float(gan_weight_generator)
        self.gan_weight_critic = float(gan_weight_critic)
        self.gan_hidden_at, self.gan_t_max = gan_hidden_at, float(gan_t_max)

    # --- what the trainer trains --------------------------------------------------------------
    def trained_trees(self) -> tuple[TreeUpdate, ...]:
        """Generator every `fake_updates` steps (first), critic every step (TTUR)."""
        return (
            TreeUpdate("generator", "generator_loss", every=self.fake_updates),
            TreeUpdate("critic", "critic_loss"),
        )

    def frozen_trees(self) -> tuple[str, ...]:
        return ("teacher",)

    # --- time grid ----------------------------------------------------------------------------
    def grid_time(self, u: jax.Array) -> jax.Array:
        """u ∈ [0, 1] (data → noise) ↦ the teacher's time (linear, or Karras for EDM's σ)."""
        dom = self.teacher.time_domain
        lo, hi = dom.last_eval, dom.noise
        if dom.variable == "sigma":
            a, b = max(lo, 1e-12) ** (1 / RHO), hi ** (1 / RHO)
            return (a + u * (b - a)) ** RHO
        return lo + u * (hi - lo)

    def generator_times(self) -> jax.Array:
        """t_0 = T > … > t_{K−1}: `[K]` evenly spaced on the grid from the noise end."""
        k = jnp.arange(self.generator_steps, dtype=jnp.float32)
        return self.grid_time(1.0 - k / self.generator_steps)

    # --- generator ----------------------------------------------------------------------------
    def generate(self, noise: jax.Array, *, y: Any = None) -> jax.Array:
        """The K-step generator: `noise: [K, B, ...]` normals (one per step) → `[B, ...]`."""
        times = self.generator_times()
        B = noise.shape[1]
        x = self._start(noise[0])
        for k in range(self.generator_steps):
            t = jnp.full((B,), times[k])
            x_hat = self.generator.denoise(x, t, y=y)
            if k + 1 < self.generator_steps:
                x = self._renoise(x_hat, jnp.full((B,), times[k + 1]), noise[k + 1])
        return x_hat

    def generate_train(self, shape: tuple[int, ...], *, y: Any = None) -> jax.Array:
        """A training sample `[B, ...]` with gradients to the generator; for K > 1 DMD2's
        backward simulation (each example from the state after k ~ U{0..K−1} steps)."""
        K, B = self.generator_steps, shape[0]
        noise = jax.random.normal(self.rngs.noise(), (K, *shape))
        times = self.generator_times()
        x = self._start(noise[0])
        if K == 1:
            return self.generator.denoise(x, jnp.full((B,), times[0]), y=y)
        k_of = jax.random.randint(self.rngs.time(), (B,), 0, K)
        denoise = functools.partial(self.generator.denoise, y=y)
        return self.generator.denoise(*self.backward_simulation(denoise, noise, k_of), y=y)

    def backward_simulation(
        self, denoise: Callable[[jax.Array, jax.Array], jax.Array], noise: jax.Array, k_of
    ) -> tuple[jax.Array, jax.Array]:
        """The state x_k after k = `k_of` `[B]` steps of the K-step sampler (no gradient) and its
        time t_k `[B]`: x_0 = σ(t_0)·noise[0], x_{k+1} = α·sg(denoise(x_k, t_k)) + σ·noise[k+1]."""
        times, B = self.generator_times(), noise.shape[1]
        x = self._start(noise[0])
        state, t_state = x, jnp.full((B,), times[0])
        for k in range(1, self.generator_steps):  # x_k from x_{k−1}; kept where k_of ≥ k
            x_hat = jax.lax.stop_gradient(denoise(x, jnp.full((B,), times[k - 1])))
            x = self._renoise(x_hat, jnp.full((B,), times[k]), noise[k])
            pick = k_of >= k
            state = jnp.where(self.bcast_right(pick, x), x, state)
            t_state = jnp.where(pick, times[k], t_state)
        return state, t_state

    def _start(self, n: jax.Array) -> jax.Array:
        _, sigma = self.teacher.alpha_sigma(self.generator_times()[:1])
        return sigma[0] * n

    def _renoise(self, x_hat: jax.Array, t: jax.Array, n: jax.Array) -> jax.Array:
        alpha, sigma = self.teacher.alpha_sigma(t)
        return self.bcast_right(alpha, x_hat) * x_hat + self.bcast_right(sigma, x_hat) * n

    # --- the distribution-matching gradient -----------------------------------------------------
    def real_denoise(self, x_t: jax.Array, t: jax.Array, *, y: Any = None) -> jax.Array:
        """x̂_real with classifier-free guidance (one 2B teacher call when w ≠ 1)."""
        if y is None or self.guidance == 1.0:
            return self.teacher.denoise(x_t, t, y=y)
        null = jnp.full_like(y, self.null_label)
        both = self.teacher.denoise(
            jnp.concatenate([x_t, x_t]), jnp.concatenate([t, t]), y=jnp.concatenate([y, null])
        )
        cond, uncond = jnp.split(both, 2)
        return uncond + self.guidance * (cond - uncond)

    def dm_gradient(self, x: jax.Array, x_t: jax.Array, t: jax.Array, *, y: Any = None):
        """g = (x̂_fake − x̂_real)/w at x_t (no gradient), w = mean|x − x̂_real| (or 1)."""
        x_hat_real = self.real_denoise(x_t, t, y=y)
        x_hat_fake = self.critic.fake.denoise(x_t, t, y=y)
        return dm_direction(x, x_hat_real, x_hat_fake, normalize=self.normalize)

    def distribution_matching(self, x, t, n, *, y: Any = None) -> jax.Array:
        """Per-example surrogate ½·mean‖x − sg(x − g)‖² `[B]` at x_t = α_t·sg(x) + σ_t·n."""
        alpha, sigma = self.teacher.alpha_sigma(t)
        b = self.bcast_right
        x_t = b(alpha, x) * jax.lax.stop_gradient(x) + b(sigma, x) * n
        g = self.dm_gradient(jax.lax.stop_gradient(x), x_t, t, y=y)
        return 0.5 * self.mean_flat((x - jax.lax.stop_gradient(x - g)) ** 2)

    # --- the two losses ---------------------------------------------------------------------------
    def generator_loss(
        self, x: jax.Array, y: Any = None, *, return_aux: bool = False, reg_noise=None,
        reg_target=None, **kwargs,
    ):  # fmt: skip
        """L_G = L_DM (+ λ_reg·regression) (+ λ_G·GAN); `x: [B, ...]` data (unused but for
        its shape), `y` labels, `reg_noise`/`reg_target` the DMD1 pairs."""
        B = x.shape[0]
        x_g = self.generate_train(x.shape, y=y)
        u = jax.random.uniform(self.rngs.time(), (B,), minval=self.t_min, maxval=self.t_max)
        n = jax.random.normal(self.rngs.noise(), x.shape)
        dm = jnp.mean(self.distribution_matching(x_g, self.grid_time(u), n, y=y))
        aux = {"dm": dm}
        loss = dm
        if self.regression_weight > 0:
            if reg_noise is None or reg_target is None:
                raise InterfaceConfigError(
                    "regression_weight > 0 needs the batch entries 'reg_noise' and 'reg_target' "
                    "(noise and the teacher's ODE output for it)."
                )
            t0 = jnp.full((reg_noise.shape[0],), self.generator_times()[0])
            pred = self.generator.denoise(self._start(reg_noise), t0, y=y)
            aux["regression"] = jnp.mean(self.mean_flat((pred - reg_target) ** 2))
            loss = loss + self.regression_weight * aux["regression"]
        if self.gan_weight_generator > 0:
            aux["gan"] = jnp.mean(jax.nn.softplus(-self.realism_logits(x_g, y=y)))
            loss = loss + self.gan_weight_generator * aux["gan"]
        return (loss, {"loss": loss, **aux}) if return_aux else loss

    def critic_loss(self, x: jax.Array, y: Any = None, *, return_aux: bool = False, **kwargs):
        """L_fake (the fake interface's denoising loss on sg(G_θ(z))) (+ λ_D·GAN); `x` data."""
        x_g = jax.lax.stop_gradient(self.generate_train(x.shape, y=y))
        fake = self.critic.fake.loss(x_g, y=y)
        aux = {"fake": fake}
        loss = fake
        if self.gan_weight_critic > 0:
            on_fake = self.realism_logits(x_g, y=y)
            on_real = self.realism_logits(x, y=y)
            aux["gan"] = jnp.mean(jax.nn.softplus(on_fake) + jax.nn.softplus(-on_real))
            aux["realism_real"] = jnp.mean(jax.nn.sigmoid(on_real))
            aux["realism_fake"] = jnp.mean(jax.nn.sigmoid(on_fake))
            loss = loss + self.gan_weight_critic * aux["gan"]
        return (loss, {"loss": loss, **aux}) if return_aux else loss

    def realism_logits(self, x: jax.Array, *, y: Any = None) -> jax.Array:
        """D(x_t): the head on the fake network's hidden tokens at x_t, t ~ U[0, gan_t_max]."""
        B = x.shape[0]
        u = jax.random.uniform(self.rngs.time(), (B,), maxval=self.gan_t_max)
        t = self.grid_time(u)
        x_t = self._renoise(x, t, jax.random.normal(self.rngs.noise(), x.shape))
        _, hidden = self.critic.fake.network_output(
            x_t, t, y=y, return_hidden_at=self.gan_hidden_at
        )
        return self.critic.head(hidden)

    def loss(self, x: jax.Array, *args, return_aux: bool = False, **kwargs):
        raise InterfaceConfigError(
            "DMD trains two trees with their own losses (generator_loss, critic_loss) on the "
            "schedule of trained_trees(); train it with nnx_train, which reads that schedule."
        )

    # --- sampling: the generator's own interface -------------------------------------------------
    @property
    def network(self) -> nnx.Module:
        return self.generator.network

    @property
    def time_domain(self) -> TimeDomain:
        return self.generator.time_domain

    def alpha_sigma(self, t):
        return self.generator.alpha_sigma(t)

    def c_in(self, t):
        return self.generator.c_in(t)

    def c_out(self, t):
        return self.generator.c_out(t)

    def c_skip(self, t):
        return self.generator.c_skip(t)

    def c_noise(self, t):
        return self.generator.c_noise(t)

    def sample_t(self, shape):
        return self.generator.sample_t(shape)

    def sample_n(self, shape):
        return self.generator.sample_n(shape)

    def sample_x_t(self, x, n, t):
        return self.generator.sample_x_t(x, n, t)

    def target(self, x, n, t, *args, **kwargs):
        return self.generator.target(x, n, t, *args, **kwargs)

    def pred(self, x_t, t, *args, **kwargs):
        """The generator's velocity: one Euler step from the noise end is G_θ (1-step)."""
        return self.generator.pred(x_t, t, *args, **kwargs)

    def denoise(self, x_t, t, *args, **kwargs):
        return self.generator.denoise(x_t, t, *args, **kwargs)

    def score(self, x_t, t, *args, **kwargs):
        return self.generator.score(x_t, t, *args, **kwargs)


def dm_direction(
    x: jax.Array, x_hat_real: jax.Array, x_hat_fake: jax.Array, *, normalize: bool = True
) -> jax.Array:
    """g = (x̂_fake − x̂_real) / w, w = mean over each example's elements of |x − x̂_real| (1 when
    not `normalize`), non-finite entries zeroed (DMD2's nan_to_num); no gradient."""
    g = x_hat_fake - x_hat_real
    if normalize:
        w = jnp.mean(jnp.abs(x - x_hat_real), axis=tuple(range(1, x.ndim)), keepdims=True)
        g = g / w
    return jax.lax.stop_gradient(jnp.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0))
