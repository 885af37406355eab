"""MeanFlow: one-step generation by regressing the average velocity (Geng et al., 2025).

On SiT's path x_t = (1 − t)·x + t·n (data at 0, noise at 1) the average velocity over [r, t] is

    u(x_t, t, r) = 1/(t − r) ∫_r^t v(x_s, s) ds,      so that   x_r = x_t − (t − r)·u(x_t, t, r),

and u(x_t, t, t) = v(x_t, t). Differentiating (t − r)·u along the trajectory gives the MeanFlow
identity (Eq. 6), whose right-hand side is the regression target:

    u(x_t, t, r) = v(x_t, t) − (t − r)·d/dt u(x_t, t, r),
    d/dt u = ∂_x u·v + ∂_t u          (one `jax.jvp` with tangents (v, 1, 0) on (x_t, t, r))
    loss = mean_B  sg(w)·‖u_θ − sg(u_tgt)‖²,   w = 1 / (‖u_θ − u_tgt‖² + norm_eps)^norm_power

with the conditional velocity v = n − x in place of v(x_t, t) (unbiased: the target is linear in
v). Classifier-free guidance is trained in (Appendix B.1): for t in [guidance_t_min,
guidance_t_max] the velocity is replaced by

    ṽ = ω·v + κ·u_θ(x_t, t, t | y) + (1 − ω − κ)·u_θ(x_t, t, t | ∅)

(ω = `guidance_scale`, κ = `guidance_mixture_ratio`, u_θ under stop-gradient), and then
`cond_drop_ratio` of the examples get the null label with the plain v = n − x.

Network inputs: the backbone sees (t, t − r): `net(x_t, t, r=t − r, y=...)` (the paper's best
"(t, t − r)" embedding). It is always called with `train=False`: MeanFlow drops labels itself
(`cond_drop`), so build the backbone with `label_dropout=0`. Every random draw (t, r, the
r = t mask, n, label drops) happens before the `jax.jvp`, which runs on a pure split/merged copy.
"""

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from nnx_interfaces.base import TrainingTimeDistType
from nnx_interfaces.errors import InterfaceConfigError
from nnx_interfaces.sit import SiTInterface


class MeanFlowInterface(SiTInterface):
    """MeanFlow on the linear path; `pred(x_t, t, r)` is the average velocity u (two-time).

    Args:
      network: a two-time backbone (e.g. `MLP(..., use_r=True)`); it receives `r = t − r`.
      train_time_dist_type, t_mu, t_sigma, t_shift_base: as `SiTInterface`; t and r are the
        max and min of two independent draws.
      guidance_scale: ω of the training-time guidance mix (1 with κ = 0 disables it).
      guidance_mixture_ratio: κ, the weight of the conditional network velocity.
      guidance_t_min, guidance_t_max: guidance applies only for t in this interval.
      norm_eps, norm_power: adaptive loss weight 1 / (‖e‖² + norm_eps)^norm_power (0: plain L2).
      fm_portion: fraction of each batch with r = t (plain flow matching), at random positions.
      cond_drop_ratio: fraction of labelled examples trained with the null label.
      num_classes: the null label (defaults to `network.num_classes`); needed only with labels.
      rngs: `nnx.Rngs` with streams `time`, `noise`, `label_dropout` (default: `network.rngs`).
    """

    two_time = True

    def __init__(
        self,
        network: nnx.Module,
        train_time_dist_type: str | TrainingTimeDistType = "logitnormal",
        *,
        t_mu: float = 0.0,
        t_sigma: float = 1.0,
        t_shift_base: int | None = 4096,
        guidance_scale: float = 1.0,
        guidance_mixture_ratio: float = 0.5,
        guidance_t_min: float = 0.0,
        guidance_t_max: float = 1.0,
        norm_eps: float = 1e-3,
        norm_power: float = 1.0,
        fm_portion: float = 0.75,
        cond_drop_ratio: float = 0.5,
        num_classes: int | None = None,
        rngs: nnx.Rngs | None = None,
    ):
        super().__init__(
            network,
            train_time_dist_type,
            t_mu=t_mu,
            t_sigma=t_sigma,
            t_shift_base=t_shift_base,
            rngs=rngs,
        )
        for name, val in (("fm_portion", fm_portion), ("cond_drop_ratio", cond_drop_ratio)):
            if not 0.0 <= val <= 1.0:
                raise InterfaceConfigError(f"{name} must be in [0, 1]; got {val}.")
        if not 0.0 <= guidance_t_min <= guidance_t_max <= 1.0:
            raise InterfaceConfigError(
                "Need 0 ≤ guidance_t_min ≤ guidance_t_max ≤ 1; got "
                f"[{guidance_t_min}, {guidance_t_max}]."
            )
        if norm_eps <= 0 or norm_power < 0:
            raise InterfaceConfigError(
                f"Need norm_eps > 0 and norm_power ≥ 0; got {norm_eps}, {norm_power}."
            )
        self.guidance_scale = float(guidance_scale)
        self.guidance_mixture_ratio = float(guidance_mixture_ratio)
        self.guidance_t_min = float(guidance_t_min)
        self.guidance_t_max = float(guidance_t_max)
        self.norm_eps = float(norm_eps)
        self.norm_power = float(norm_power)
        self.fm_portion = float(fm_portion)
        self.cond_drop_ratio = float(cond_drop_ratio)
        self.num_classes = (
            num_classes if num_classes is not None else getattr(network, "num_classes", None)
        )

    # --- times -------------------------------------------------------------------------------
    def sample_t_r(
        self, shape: tuple[int, ...], data_shape: tuple[int, ...] | None = None
    ) -> tuple[jax.Array, jax.Array]:
        """(t, r) `[B]` with t ≥ r: max/min of two draws; round(fm_portion·B) random rows r = t."""
        a = self.sample_t(shape, data_shape)
        b = self.sample_t(shape, data_shape)
        t, r = jnp.maximum(a, b), jnp.minimum(a, b)
        n_fm = round(self.fm_portion * shape[0])
        mask = jax.random.permutation(self.rngs.time(), jnp.arange(shape[0]) < n_fm)
        return t, jnp.where(mask, t, r)

    # --- model outputs -----------------------------------------------------------------------
    def pred(
        self, x_t: jax.Array, t: jax.Array, r: jax.Array | None = None, *args, **kwargs
    ) -> jax.Array:
        """u(x_t, t, r) `[B, ...]`, so x_r = x_t − (t − r)·u; r = None means r = t (velocity)."""
        r = t if r is None else r
        kwargs.pop("r", None)
        return self.network_output(x_t, t, *args, r=self.c_noise(t) - self.c_noise(r), **kwargs)[0]

    def u_and_dudt(
        self,
        x_t: jax.Array,
        t: jax.Array,
        r: jax.Array,
        v: jax.Array,
        *args,
        **kwargs,
    ) -> tuple[jax.Array, jax.Array, jax.Array | None]:
        """(u, du/dt, hidden): u_θ(x_t, t, r) and its derivative along (v, 1, 0) by one `jax.jvp`.

        The network runs as a pure function of (x_t, t, r) on a split/merged copy with
        `train=False`, so nothing inside the JVP draws random numbers or mutates state.
        """
        kwargs["train"] = False
        graphdef, state = nnx.split(self.network)
        want_hidden = kwargs.get("return_hidden_at") is not None

        def u_fn(z, t_, r_):
            net = nnx.merge(graphdef, state)
            out = net(z, self.c_noise(t_), *args, r=self.c_noise(t_) - self.c_noise(r_), **kwargs)
            return out if want_hidden else (out, jnp.zeros(()))

        (u, hidden), (du_dt, _) = jax.jvp(
            u_fn, (x_t, t, r), (v, jnp.ones_like(t), jnp.zeros_like(r))
        )
        return u, du_dt, hidden if want_hidden else None

    # --- guidance and label dropout ----------------------------------------------------------
    def _null_labels(self, y: jax.Array) -> jax.Array:
        if self.num_classes is None:
            raise InterfaceConfigError(
                "MeanFlow got labels y but does not know the null label: pass num_classes= to "
                "MeanFlowInterface (or neg_y= to loss), or use a network with `num_classes`."
            )
        return jnp.full_like(y, self.num_classes)

    def cond_drop(
        self, x: jax.Array, n: jax.Array, v: jax.Array, y: jax.Array, neg_y: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        """Give `cond_drop_ratio` of the rows the null label `neg_y` and the plain v = n − x.

        Done here, not in the backbone, because the target velocity of a dropped row changes too.
        """
        drop = jax.random.bernoulli(self.rngs.label_dropout(), self.cond_drop_ratio, (x.shape[0],))
        v = jnp.where(self.bcast_right(drop, v), n - x, v)
        y = jnp.where(self.bcast_right(drop, y), neg_y, y)
        return v, y

    def insta_velocity(
        self,
        x: jax.Array,
        n: jax.Array,
        t: jax.Array,
        *args,
        y: jax.Array | None = None,
        neg_y: jax.Array | None = None,
        **kwargs,
    ) -> tuple[jax.Array, jax.Array | None, jax.Array | None]:
        """(ṽ, y, neg_y): the (guided, label-dropped) instantaneous velocity used as the target."""
        v = n - x
        if y is None:
            return v, None, None
        neg_y = self._null_labels(y) if neg_y is None else neg_y
        omega, kappa = self.guidance_scale, self.guidance_mixture_ratio
        if omega != 1.0 or kappa != 0.0:
            kwargs["train"] = False
            kwargs.pop("return_hidden_at", None)
            x_t = self.sample_x_t(x, n, t)
            u_cond = jax.lax.stop_gradient(self.pred(x_t, t, t, *args, y=y, **kwargs))
            u_null = jax.lax.stop_gradient(self.pred(x_t, t, t, *args, y=neg_y, **kwargs))
            inside = (t >= self.guidance_t_min) & (t <= self.guidance_t_max)
            w = self.bcast_right(jnp.where(inside, omega, 1.0), v)
            k = self.bcast_right(jnp.where(inside, kappa, 0.0), v)
            v = w * v + k * u_cond + (1.0 - w - k) * u_null
        v, y = self.cond_drop(x, n, v, y, neg_y)
        return v, y, neg_y

    # --- target and loss ---------------------------------------------------------------------
    def target(
        self,
        x: jax.Array,
        n: jax.Array,
        t: jax.Array,
        r: jax.Array | None = None,
        *args,
        y: jax.Array | None = None,
        neg_y: jax.Array | None = None,
        **kwargs,
    ) -> jax.Array:
        """sg(ṽ − (t − r)·du/dt) `[B, ...]` (r = None: r = t, the flow-matching target)."""
        r = t if r is None else r
        v, y, _ = self.insta_velocity(x, n, t, *args, y=y, neg_y=neg_y, **kwargs)
        if y is not None:
            kwargs["y"] = y
        _, du_dt, _ = self.u_and_dudt(self.sample_x_t(x, n, t), t, r, v, *args, **kwargs)
        return jax.lax.stop_gradient(v - self.bcast_right(t - r, v) * du_dt)

    def loss(self, x: jax.Array, *args, return_aux: bool = False, **kwargs) -> Any:
        """MeanFlow loss mean_B sg(w)·‖u_θ(x_t, t, r) − sg(ṽ − (t − r)·du/dt)‖².

        Args:
          x: clean data `[B, ...]`; `y=` labels and `neg_y=` null labels (optional); other
            kwargs go to the network (`train` is ignored: the backbone runs with train=False).
        Returns:
          the scalar loss, or `(loss, aux)` with aux keys `loss`, `mse` (unweighted per-entry
          mean of (u − u_tgt)²), `per_example` `[B]` (weighted), `sq_norm` `[B]` (‖e‖²),
          `weight` `[B]`, `t` `[B]`, `r` `[B]` (and `hidden` when requested).
        """
        kwargs.pop("train", None)
        y, neg_y = kwargs.pop("y", None), kwargs.pop("neg_y", None)
        t, r = self.sample_t_r((x.shape[0],), data_shape=x.shape[1:])
        n = self.sample_n(x.shape)
        x_t = self.sample_x_t(x, n, t)
        v, y, _ = self.insta_velocity(x, n, t, *args, y=y, neg_y=neg_y, **kwargs)
        if y is not None:
            kwargs["y"] = y
        u, du_dt, hidden = self.u_and_dudt(x_t, t, r, v, *args, **kwargs)
        u_tgt = jax.lax.stop_gradient(v - self.bcast_right(t - r, v) * du_dt)
        # Adaptive weight (Sec. 4.3): per-example ‖e‖², weighted by sg(1 / (‖e‖² + ε)^p).
        sq = jnp.sum(((u - u_tgt) ** 2).reshape(x.shape[0], -1), axis=-1)
        weight = jax.lax.stop_gradient(1.0 / (sq + self.norm_eps) ** self.norm_power)
        per_example = weight * sq
        loss = jnp.mean(per_example)
        if not return_aux:
            return loss
        aux = {
            "loss": loss,
            "mse": jnp.mean(sq) / (x.size // x.shape[0]),
            "per_example": per_example,
            "sq_norm": sq,
            "weight": weight,
            "t": t,
            "r": r,
        }
        if hidden is not None:
            aux["hidden"] = hidden
        return loss, aux
