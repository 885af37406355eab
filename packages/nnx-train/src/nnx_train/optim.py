"""Learning-rate schedules and the optimizer (optax), from explicit arguments.

Schedules (t = optimizer step, W = warm-up steps, η = peak lr):
  warm-up        η_t = η · t / W                         for t < W
  constant       η_t = η
  cosine         η_t = η · (r + (1 − r) · ½(1 + cos(π · min(t − W, D) / D)))   (r = min_lr_ratio)
  inverse_sqrt   η_t = η · min(1, sqrt(t_ref / t))       (EDM2, Equation 16, in steps)
Gradient clipping is by global norm, before the optimizer.
"""

import jax.numpy as jnp
import optax

from nnx_train.errors import ConfigError


def lr_schedule(
    lr: float,
    schedule: str = "constant",
    *,
    warmup_steps: int = 0,
    total_steps: int = 1,
    decay_steps: int = 0,
    min_lr_ratio: float = 0.0,
    ref_steps: int = 0,
) -> optax.Schedule:
    """The learning rate as a function of the step count (a traced int)."""
    if schedule == "constant":
        main = optax.constant_schedule(lr)
    elif schedule == "cosine":
        length = decay_steps or max(total_steps - warmup_steps, 1)
        main = optax.cosine_decay_schedule(lr, length, alpha=min_lr_ratio)
    elif schedule == "inverse_sqrt":
        t_ref = float(ref_steps or max(warmup_steps, 1))

        def main(t):
            t = jnp.maximum(jnp.asarray(t, jnp.float32) + warmup_steps, 1.0)
            return lr * jnp.minimum(1.0, jnp.sqrt(t_ref / t))
    else:
        raise ConfigError(
            f"Unknown lr schedule {schedule!r}; expected 'constant', 'cosine' or 'inverse_sqrt'."
        )
    if warmup_steps <= 0:
        return main
    warm = optax.linear_schedule(0.0, lr, warmup_steps)
    return optax.join_schedules([warm, main], [warmup_steps])


def build_optimizer(
    name: str,
    schedule: optax.Schedule,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    grad_clip: float = 0.0,
) -> optax.GradientTransformation:
    """Global-norm clipping (if `grad_clip` > 0) followed by the named optimizer."""
    if name == "adamw":
        opt = optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)
    elif name == "adam":
        opt = optax.adam(schedule, b1=b1, b2=b2, eps=eps)
    elif name == "lion":
        opt = optax.lion(schedule, b1=b1, b2=b2, weight_decay=weight_decay)
    elif name == "sgd":
        opt = optax.sgd(schedule, momentum=b1 or None)
    else:
        raise ConfigError(f"Unknown optimizer {name!r}; expected adamw, adam, lion or sgd.")
    if grad_clip > 0:
        return optax.chain(optax.clip_by_global_norm(grad_clip), opt)
    return opt
