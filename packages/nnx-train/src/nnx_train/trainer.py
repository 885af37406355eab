"""The trainer: `train(config, make_data)` reads top to bottom like the run it performs.

    config → distributed + mesh → model + interface → shardings → optimizer → state (restore or
    init) → compile the step → loop (step, log, sample, eval, checkpoint, post-hoc snapshots)

`make_data(process_index, process_count, local_batch_size)` returns this process's iterator of
batches `{"x": [b, *data.shape], "y": [b] (optional)}`, b = global_batch_size / process_count; a
grain iterator (with get_state / set_state) makes resumes continue the exact data order.

SIGTERM (preemption): the current step finishes, a checkpoint is saved and `train` returns with
`preempted=True` (the caller exits 0). K consecutive non-finite steps raise `NonFiniteError`
after pending saves finish (the parameters were never updated with non-finite values).
"""

import dataclasses
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

from nnx_interfaces.base import Interfaces
from nnx_train import callbacks, checkpoint, fileio, optim, posthoc_ema, registry, sharding
from nnx_train import config as config_lib
from nnx_train import ema as ema_lib
from nnx_train import metrics as metrics_lib
from nnx_train import state as state_lib
from nnx_train import step as step_lib
from nnx_train.errors import ConfigError, NonFiniteError

log = logging.getLogger(__name__)

RNG_STREAMS = ("params", "time", "noise", "label_dropout", "dropout", "sample")
MakeData = Callable[[int, int, int], Iterator[dict]]


@dataclasses.dataclass
class TrainResult:
    """What `train` returns: the final state (on device), the last step and how it ended."""

    state: dict
    step: int
    preempted: bool
    metrics: dict
    checkpoint_dir: str


def make_rngs(seed: int) -> nnx.Rngs:
    """One stream per name in `RNG_STREAMS`, each seeded from (seed, stream index)."""
    return nnx.Rngs(**{name: seed * len(RNG_STREAMS) + i for i, name in enumerate(RNG_STREAMS)})


def build_interface(config: ml_collections.ConfigDict) -> Interfaces:
    """Backbone and interface from `config.model` / `config.interface` (registry names + kwargs)."""
    model_kwargs = config_lib.constructor_kwargs(config.model)
    for key in ("dtype", "param_dtype"):
        if isinstance(model_kwargs.get(key), str):
            model_kwargs[key] = jnp.dtype(model_kwargs[key])
    network = registry.build(
        "model", config.model.name, **model_kwargs, rngs=make_rngs(config.seed)
    )
    iface_kwargs = config_lib.constructor_kwargs(config.interface)
    return registry.build("interface", config.interface.name, network, **iface_kwargs)


def build_sampler(section: ml_collections.ConfigDict) -> Any:
    return registry.build("sampler", section.name, **config_lib.constructor_kwargs(section))


def train(
    config: ml_collections.ConfigDict,
    make_data: MakeData,
    *,
    evaluators: Sequence[callbacks.Evaluator] = (),
    decode_fn: Callable[[jax.Array], jax.Array] | None = None,
    step_callback: Callable[[int], None] | None = None,
    devices: Sequence[jax.Device] | None = None,
) -> TrainResult:
    """Train the configured model; see the module docstring and the README for the config.

    Args:
      config: a ConfigDict following `nnx_train.config.default_config()`.
      make_data: `(process_index, process_count, local_batch_size) -> iterator of batches`.
      evaluators: `(sample_fn, step) -> {name: value}` run every `eval.every_steps`.
      decode_fn: latents → images in [−1, 1] for sample grids (e.g. a VAE decoder).
      step_callback: called with the step number after every step (profiling, tests).
      devices: devices of the mesh (default: all devices of all processes).
    """
    # ===== config ================================================================================
    config_lib.validate_config(config)
    if config.distributed.initialize:
        d = config.distributed
        sharding.initialize_distributed(d.coordinator_address, d.num_processes, d.process_id)
    is_main = jax.process_index() == 0
    workdir = config.workdir
    ckpt_dir = config.checkpoint.dir or fileio.join(workdir, "checkpoints")

    # ===== mesh ==================================================================================
    m = config.mesh
    mesh = sharding.build_mesh(m.data, m.fsdp, m.tensor, devices, context=m.context)
    local_batch = sharding.batch_size_per_process(config.data.global_batch_size, mesh)
    replicated = NamedSharding(mesh, PartitionSpec())

    # ===== model + interface (abstract: nothing is allocated yet) ================================
    abstract_iface = nnx.eval_shape(lambda: build_interface(config))
    sharding.check_model_parallel(abstract_iface, mesh)  # heads / tokens fit tensor / context
    graphdef, abs_params, abs_rng, _ = state_lib.split_module(abstract_iface)
    rng_template = state_lib.key_template(abs_rng)

    # ===== optimizer =============================================================================
    o = config.optimizer
    schedule = optim.lr_schedule(
        o.lr,
        o.schedule,
        warmup_steps=o.warmup_steps,
        total_steps=config.total_steps,
        decay_steps=o.decay_steps,
        min_lr_ratio=o.min_lr_ratio,
        ref_steps=o.ref_steps,
    )
    optimizer = optim.build_optimizer(
        o.name, schedule, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay,
        grad_clip=o.grad_clip,
    )  # fmt: skip

    # ===== train state and its shardings =========================================================
    def init_state() -> dict:
        _, params, rng, other = state_lib.split_module(build_interface(config))
        return {
            "step": jnp.zeros((), jnp.int32),
            "params": params,
            "opt_state": optimizer.init(params),
            "ema": ema_lib.init_emas(params, config.ema.decays),
            "power_ema": posthoc_ema.init_power_emas(params, config.posthoc_ema.stds),
            "rng": state_lib.keys_to_data(rng),
            "other": other,
            "guard": step_lib.init_guard(),
        }

    abstract_state = jax.eval_shape(init_state)
    p_specs = sharding.param_specs(
        abs_params, mesh, config.sharding.strategy, config.sharding.min_size,
        [tuple(r) for r in config.sharding.rules],
    )  # fmt: skip
    specs = {
        k: sharding.follow_specs(v, abs_params, p_specs)
        if k in ("opt_state", "ema", "power_ema")
        else jax.tree.map(lambda _: PartitionSpec(), v)
        for k, v in abstract_state.items()
    }
    specs["params"] = p_specs
    state_shardings = sharding.named(mesh, specs)
    abstract_state = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
        abstract_state,
        state_shardings,
    )

    # ===== data ==================================================================================
    data_iter = make_data(jax.process_index(), jax.process_count(), local_batch)

    # ===== restore or initialise =================================================================
    ckpt = checkpoint.Checkpointer(
        ckpt_dir,
        keep_last=config.checkpoint.keep_last,
        keep_every=config.checkpoint.keep_every,
        async_save=config.checkpoint.async_save,
    )
    restored = None
    if config.checkpoint.resume:
        restored = ckpt.restore(abstract_state, data_iter, config)
    if restored is not None:
        start_step, state = restored
        log.info("resumed from step %d under %s", start_step, ckpt_dir)
    else:
        start_step = 0
        state = jax.jit(init_state, out_shardings=state_shardings)()
    snapshots = None
    if config.posthoc_ema.stds and config.posthoc_ema.snapshot_every > 0:
        snapshots = checkpoint.SnapshotWriter(
            fileio.join(workdir, "posthoc_ema"), async_save=config.checkpoint.async_save
        )

    # ===== compile the step ======================================================================
    train_step = step_lib.make_train_step(
        graphdef,
        rng_template,
        optimizer,
        schedule,
        grad_accum=config.train.grad_accum,
        ema_warmup=config.ema.warmup,
        max_nonfinite=config.train.max_nonfinite,
    )
    batch_sharding = sharding.batch_sharding(mesh)
    first = next(data_iter)
    abstract_batch = {
        k: jax.ShapeDtypeStruct((config.data.global_batch_size, *np.shape(v)[1:]),
                                np.asarray(v).dtype, sharding=batch_sharding)
        for k, v in first.items()
    }  # fmt: skip
    jitted = jax.jit(
        train_step,
        in_shardings=(state_shardings, batch_sharding),
        out_shardings=(state_shardings, replicated),
        donate_argnums=0,
    )
    with jax.set_mesh(mesh):  # the layers pin activations to it (nnx_backbones.layers.parallel)
        compiled = jitted.lower(abstract_state, abstract_batch).compile()
    flops = metrics_lib.compiled_flops(compiled)
    peak = config.log.peak_flops or metrics_lib.detect_peak_flops()

    # ===== logging, sampling, preemption =========================================================
    logger = metrics_lib.MetricsLogger(
        workdir,
        total_steps=config.total_steps,
        start_step=start_step,
        wandb_mode=config.log.wandb_mode,
        wandb_project=config.log.wandb_project,
        wandb_name=config.log.wandb_name,
        config=config.to_dict(),
        progress_bar=config.log.progress_bar and is_main,
        enabled=is_main,
    )
    if is_main:
        logger.write(start_step, {
            "event": "start", "params": state_lib.param_count(abs_params),
            "flops_per_step_per_device": flops or 0.0, "devices": jax.device_count(),
        })  # fmt: skip

    def interface_with(which: str) -> Callable[[], nnx.Module]:
        def fn():
            params = state["params"] if not which else state["ema"][_ema_key(which, config)]
            rng = state_lib.data_to_keys(state["rng"], rng_template)
            return state_lib.merge_module(graphdef, params, rng, state["other"])

        return fn

    preempt = threading.Event()
    previous_handler = _install_sigterm(preempt)
    last_saved = start_step if restored is not None else -1

    def save(step_now: int) -> None:
        nonlocal last_saved
        if step_now != last_saved:
            ckpt.save(step_now, state, data_iter, config.to_dict())
            last_saved = step_now

    # ===== loop ==================================================================================
    step = start_step
    pending: list[dict] = []
    window_start, window_steps = time.perf_counter(), 0
    result_metrics: dict = {}
    preempted = False
    batch_np = first
    try:
        while step < config.total_steps:
            batch = sharding.global_batch(batch_np, mesh)
            state, step_metrics = compiled(state, batch)
            step += 1
            pending.append(step_metrics)
            window_steps += 1
            logger.advance()
            if step_callback is not None:
                step_callback(step)

            stop = _should_stop(preempt, step, config.log.every_steps)
            if step % config.log.every_steps == 0 or step == config.total_steps or stop:
                result_metrics = _summarise(pending, time.perf_counter() - window_start,
                                            window_steps, config, flops, peak)  # fmt: skip
                pending, window_start, window_steps = [], time.perf_counter(), 0
                logger.write(step, result_metrics)
                if result_metrics["tripped"]:
                    ckpt.wait()
                    raise NonFiniteError(
                        f"{config.train.max_nonfinite} consecutive steps had a non-finite loss "
                        f"or gradient (by step {step}; {result_metrics['skipped']} skipped in "
                        f"total). Their updates were skipped; the last checkpoint "
                        f"(step {last_saved}, under {ckpt_dir}) holds good parameters. Lower "
                        f"the learning rate, check the data, or use a float32 compute dtype."
                    )
            if snapshots is not None and step % config.posthoc_ema.snapshot_every == 0:
                snapshots.save(step, state["power_ema"])
            if config.sample.every_steps and step % config.sample.every_steps == 0:
                _sample_grid(config, interface_with(config.sample.ema), step, decode_fn, is_main)
            if evaluators and config.eval.every_steps and step % config.eval.every_steps == 0:
                fn = callbacks.make_sample_fn(
                    interface_with(config.eval.ema), build_sampler(config.sample.sampler),
                    config.data.shape, guidance=config.sample.guidance,
                )  # fmt: skip
                for evaluate in evaluators:
                    logger.write(step, {f"eval/{k}": v for k, v in evaluate(fn, step).items()})
            every = config.checkpoint.every_steps
            if stop or (every > 0 and (step % every == 0 or step == config.total_steps)):
                save(step)
            if stop:
                preempted = True
                break
            if step < config.total_steps:
                batch_np = next(data_iter)
    finally:
        ckpt.close()
        if snapshots is not None:
            snapshots.close()
        logger.close()
        signal.signal(signal.SIGTERM, previous_handler)
    return TrainResult(state, step, preempted, result_metrics, ckpt_dir)


# --- helpers -----------------------------------------------------------------------------------
def _install_sigterm(event: threading.Event) -> Any:
    """SIGTERM sets `event` (main thread only); returns the previous handler."""
    if threading.current_thread() is not threading.main_thread():
        return signal.getsignal(signal.SIGTERM)
    return signal.signal(signal.SIGTERM, lambda signum, frame: event.set())


def _should_stop(event: threading.Event, step: int, every: int) -> bool:
    """True once SIGTERM arrived. With several processes the flag is all-gathered (one tiny host
    sync) at logging steps only, so that every process stops after the same step."""
    if jax.process_count() == 1:
        return event.is_set()
    if step % every:
        return False
    flags = multihost_utils.process_allgather(np.asarray(event.is_set()))
    return bool(np.any(flags))


def _ema_key(which: str, config: ml_collections.ConfigDict) -> str:
    names = [ema_lib.ema_name(d) for d in config.ema.decays]
    key = ema_lib.ema_name(float(which))
    if key not in names:
        raise ConfigError(f"sample/eval ema = {which!r} is not one of ema.decays {names}.")
    return key


def _summarise(pending, seconds, steps, config, flops, peak) -> dict:
    """Host-side reduction of the metrics of one logging window (the only host sync)."""
    host = jax.device_get(pending)
    out: dict[str, Any] = {}
    for key in host[-1]:
        values = np.asarray([m[key] for m in host])
        if key in ("lr", "skipped", "tripped", "finite"):
            out[key] = values[-1].item()
        else:
            finite = values[np.isfinite(values)]
            out[key] = float(finite.mean()) if finite.size else float("nan")
    steps_per_s = steps / max(seconds, 1e-9)
    out["steps_per_s"] = steps_per_s
    out["images_per_s"] = steps_per_s * config.data.global_batch_size
    if flops and peak:
        out["mfu"] = flops * steps_per_s / peak
    return out


def _sample_grid(config, interface_fn, step, decode_fn, is_main) -> None:
    s = config.sample
    sampler = build_sampler(s.sampler)
    n = s.num_images
    labels = (
        jnp.arange(n, dtype=jnp.int32) % config.data.num_classes
        if config.data.num_classes
        else None
    )
    fn = callbacks.make_sample_fn(interface_fn, sampler, config.data.shape, guidance=s.guidance)
    key = jax.random.fold_in(jax.random.key(config.seed), step)
    x = fn(key, labels, n)
    if decode_fn is not None:
        x = decode_fn(x)
    if is_main:
        path = fileio.join(config.workdir, "samples", f"{step:08d}.png")
        callbacks.save_grid(np.asarray(x), None if labels is None else np.asarray(labels), path)
        log.info("wrote %s", path)
