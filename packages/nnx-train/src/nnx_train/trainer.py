"""The trainer: `train(config, make_data)` reads top to bottom like the run it performs.

    config → distributed + mesh → model + interface → shardings → optimizer → state (restore or
    init) → compile the step → loop (step, log, sample, eval, checkpoint, post-hoc snapshots)

`make_data(process_index, process_count, local_batch_size)` returns this process's iterator of
batches `{"x": [b, *data.shape], "y": [b] (optional)}`, b = global_batch_size / process_count; a
grain iterator (with get_state / set_state) makes resumes continue the exact data order.

SIGTERM (preemption) or SIGINT (Ctrl-C): the current step finishes, a checkpoint is saved and
`train` returns with `preempted=True` (the caller exits 0); a second Ctrl-C stops at once.
Progress (building, restoring, compiling, resumed / interrupted at step N) goes to the
`nnx_train.trainer` logger at INFO. K consecutive non-finite steps raise `NonFiniteError`
after pending saves finish (no update that was non-finite, or would have made the state
non-finite, was applied). One trainer per workdir (`workdir.RunLock`); the checkpoint directory
is checked writable before anything compiles; a failed asynchronous save stops the run at the
next step boundary (`Checkpointer.poll`).

Objectives with several trained trees (`Interfaces.trained_trees()`, e.g. DMD2) get one optimizer,
schedule and set of EMAs per tree (`config.trees.<name>` overrides `optimizer` / `ema` /
`posthoc_ema`) and the multi-tree step; frozen trees (`Interfaces.frozen_trees()`, teachers) sit
in `state["frozen"]`, FSDP-sharded like parameters, with no optimizer state, never updated.
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

from nnx_interfaces.base import Interfaces, TreeUpdate
from nnx_train import callbacks, checkpoint, fileio, optim, registry, sharding
from nnx_train import config as config_lib
from nnx_train import ema as ema_lib
from nnx_train import metrics as metrics_lib
from nnx_train import state as state_lib
from nnx_train import step as step_lib
from nnx_train import workdir as workdir_lib
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
    workdir = fileio.absolute(config.workdir)  # relative paths: from the current directory
    ckpt_dir = fileio.absolute(config.checkpoint.dir) or fileio.join(workdir, "checkpoints")

    # ===== mesh ==================================================================================
    m = config.mesh
    mesh = sharding.build_mesh(m.data, m.fsdp, m.tensor, devices, context=m.context)
    local_batch = sharding.batch_size_per_process(config.data.global_batch_size, mesh)
    replicated = NamedSharding(mesh, PartitionSpec())

    # ===== model + interface (abstract: nothing is allocated yet) ================================
    log.info("building %s / %s on %d devices", config.model.name, config.interface.name,
             jax.device_count())  # fmt: skip
    abstract_iface = nnx.eval_shape(lambda: build_interface(config))
    sharding.check_model_parallel(abstract_iface, mesh)  # heads / tokens fit tensor / context
    graphdef, abs_params, abs_rng, _, abs_frozen = state_lib.split_module(abstract_iface)
    rng_template = state_lib.key_template(abs_rng)
    trees = _trained_trees(abstract_iface, abs_params, config)  # () = one tree, the usual case

    # ===== optimizer =============================================================================
    optimizer, schedule = _optimizer(config.optimizer, config.total_steps)
    tree_cfgs = {t.tree: config_lib.tree_config(config, t.tree) for t in trees}
    tree_opts = {n: _optimizer(c.optimizer, config.total_steps) for n, c in tree_cfgs.items()}

    # ===== train state and its shardings =========================================================
    def init_state() -> dict:
        _, params, rng, other, frozen = state_lib.split_module(build_interface(config))
        if not trees:
            return step_lib.init_state(
                params, rng, other, optimizer, ema_decays=config.ema.decays,
                power_stds=config.posthoc_ema.stds, frozen=frozen,
            )  # fmt: skip
        return step_lib.init_state(  # per-tree entries keyed by tree name (nnx_train.state)
            params, rng, other, {n: o[0] for n, o in tree_opts.items()},
            ema_decays={n: c.ema.decays for n, c in tree_cfgs.items()},
            power_stds={n: c.posthoc_ema.stds for n, c in tree_cfgs.items()}, frozen=frozen,
        )  # fmt: skip

    abstract_state = jax.eval_shape(init_state)

    def param_specs(tree):
        return sharding.param_specs(
            tree, mesh, config.sharding.strategy, config.sharding.min_size,
            [tuple(r) for r in config.sharding.rules],
        )  # fmt: skip

    def follow(v):  # optimizer / EMA states follow their tree's parameter specs
        if not trees:
            return sharding.follow_specs(v, abs_params, p_specs)
        return {n: sharding.follow_specs(v[n], abs_params[n], p_specs[n]) for n in v}

    p_specs = param_specs(abs_params)
    specs = {
        k: follow(v)
        if k in ("opt_state", "ema", "power_ema")
        else jax.tree.map(lambda _: PartitionSpec(), v)
        for k, v in abstract_state.items()
    }
    specs["params"] = p_specs
    if abs_frozen:
        specs["frozen"] = param_specs(abs_frozen)
    state_shardings = sharding.named(mesh, specs)
    abstract_state = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
        abstract_state,
        state_shardings,
    )

    # ===== data ==================================================================================
    data_iter = make_data(jax.process_index(), jax.process_count(), local_batch)

    # ===== restore or initialise (one trainer per workdir; room for a checkpoint) ================
    run_lock = workdir_lib.acquire_run_lock(workdir, ckpt_dir)  # released in `finally` (or at exit)
    workdir_lib.check_writable(ckpt_dir, state_lib.tree_bytes(abstract_state))
    ckpt = checkpoint.Checkpointer(
        ckpt_dir,
        keep_last=config.checkpoint.keep_last,
        keep_every=config.checkpoint.keep_every,
        async_save=config.checkpoint.async_save,
    )
    restored = None
    if config.checkpoint.resume:
        log.info("looking for a checkpoint to restore under %s", ckpt_dir)
        restored = ckpt.restore(abstract_state, data_iter, config)
    else:
        ckpt.require_empty()
    if restored is not None:
        start_step, state = restored
        log.info("resumed from step %d under %s", start_step, ckpt_dir)
    else:
        start_step = 0
        log.info("initialising a new run (checkpoints go to %s)", ckpt_dir)
        state = jax.jit(init_state, out_shardings=state_shardings)()
    snapshots = _snapshot_writers(config, tree_cfgs)

    # ===== compile the step ======================================================================
    if not trees:
        train_step = step_lib.make_train_step(
            graphdef,
            rng_template,
            optimizer,
            schedule,
            grad_accum=config.train.grad_accum,
            ema_warmup=config.ema.warmup,
            max_nonfinite=config.train.max_nonfinite,
        )
    else:
        tree_steps = [
            step_lib.TreeStep(t.tree, *tree_opts[t.tree], loss=t.loss, every=t.every,
                              offset=t.offset)
            for t in trees
        ]  # fmt: skip
        train_step = step_lib.make_multi_train_step(
            graphdef,
            rng_template,
            tree_steps,
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
    log.info("compiling the train step")
    with jax.set_mesh(mesh):  # the layers pin activations to it (nnx_backbones.layers.parallel)
        compiled = jitted.lower(abstract_state, abstract_batch).compile()
    log.info("training steps %d → %d", start_step, config.total_steps)
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
        tensorboard=config.log.tensorboard,
        enabled=is_main,
    )
    if is_main:
        logger.write(start_step, {
            "event": "start", "params": state_lib.param_count(abs_params),
            "flops_per_step_per_device": flops or 0.0, "devices": jax.device_count(),
        })  # fmt: skip

    def interface_with(which: str) -> Callable[[], nnx.Module]:
        def fn():
            params = state_lib.select_params(state, which and _ema_key(which, config))
            rng = state_lib.data_to_keys(state["rng"], rng_template)
            frozen = state.get("frozen")
            return state_lib.merge_module(graphdef, params, rng, state["other"], frozen)

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
            ckpt.poll(step)  # a failed asynchronous save stops the run here

            stop = _should_stop(preempt, step, config.log.every_steps)
            if step % config.log.every_steps == 0 or step == config.total_steps or stop:
                result_metrics = _summarise(pending, time.perf_counter() - window_start,
                                            window_steps, config, flops, peak)  # fmt: skip
                pending, window_start, window_steps = [], time.perf_counter(), 0
                logger.write(step, result_metrics)
                if result_metrics["tripped"]:
                    ckpt.wait()
                    raise NonFiniteError(
                        f"{config.train.max_nonfinite} consecutive steps had a non-finite loss, "
                        f"gradient or updated state (by step {step}; "
                        f"{result_metrics['skipped']} skipped in total). Their updates were not "
                        f"applied. {ckpt.describe_newest_finite()} Lower the learning rate, "
                        f"check the data, or use a float32 compute dtype."
                    )
            if snapshots and step % config.posthoc_ema.snapshot_every == 0:
                for name, writer in snapshots.items():
                    writer.save(step, state["power_ema"] if name is None else
                                state["power_ema"][name])  # fmt: skip
            if config.sample.every_steps and step % config.sample.every_steps == 0:
                _sample_grid(config, interface_with(config.sample.ema), step, decode_fn, is_main)
            if evaluators and config.eval.every_steps and step % config.eval.every_steps == 0:
                fn = callbacks.make_sample_fn(
                    interface_with(config.eval.ema), build_sampler(config.sample.sampler),
                    config.data.shape, guidance=config.sample.guidance,
                    guidance_channels=config.sample.guidance_channels,
                )  # fmt: skip
                for evaluate in evaluators:
                    logger.write(step, {f"eval/{k}": v for k, v in evaluate(fn, step).items()})
            every = config.checkpoint.every_steps
            if stop or (every > 0 and (step % every == 0 or step == config.total_steps)):
                save(step)
            if stop:
                preempted = True
                why = "interrupted" if preempt.signal == "SIGINT" else "preempted"
                log.info("%s at step %d; checkpoint saved; rerun the same command to resume",
                         why, step)  # fmt: skip
                break
            if step < config.total_steps:
                batch_np = next(data_iter)
    finally:
        ckpt.close()
        for writer in snapshots.values():
            writer.close()
        logger.close()
        for signum, handler in previous_handler.items():
            signal.signal(signum, handler)
        run_lock.release()
    return TrainResult(state, step, preempted, result_metrics, ckpt_dir)


# --- helpers -----------------------------------------------------------------------------------
def _install_sigterm(event: threading.Event) -> dict:
    """SIGTERM and SIGINT set `event` and record the signal's name in `event.signal` (main thread
    only; a second SIGINT raises KeyboardInterrupt at once); returns the previous handlers."""
    event.signal = ""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum, frame):
        if signum == signal.SIGINT and event.is_set():
            raise KeyboardInterrupt
        event.signal = signal.Signals(signum).name
        event.set()
        if signum == signal.SIGINT:
            log.warning("Ctrl-C: finishing this step and saving (Ctrl-C again to stop at once)")

    return {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}


def _should_stop(event: threading.Event, step: int, every: int) -> bool:
    """True once SIGTERM / SIGINT arrived. With several processes the flag is all-gathered (one
    tiny host sync) at logging steps only, so that every process stops after the same step."""
    if jax.process_count() == 1:
        return event.is_set()
    if step % every:
        return False
    flags = multihost_utils.process_allgather(np.asarray(event.is_set()))
    return bool(np.any(flags))


def _optimizer(o: ml_collections.ConfigDict, total_steps: int) -> tuple[Any, Any]:
    """(optax optimizer, lr schedule) of an `optimizer` config section."""
    schedule = optim.lr_schedule(
        o.lr,
        o.schedule,
        warmup_steps=o.warmup_steps,
        total_steps=total_steps,
        decay_steps=o.decay_steps,
        min_lr_ratio=o.min_lr_ratio,
        ref_steps=o.ref_steps,
    )
    optimizer = optim.build_optimizer(
        o.name, schedule, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay,
        grad_clip=o.grad_clip,
    )  # fmt: skip
    return optimizer, schedule


def _trained_trees(iface: nnx.Module, params: dict, config) -> tuple[TreeUpdate, ...]:
    """The objective's declared trained trees, checked against its parameters and the config:
    every tree an attribute holding parameters, every trained parameter in some tree, every
    `config.trees` entry a declared tree."""
    declared = getattr(iface, "trained_trees", None)
    trees = tuple(declared()) if callable(declared) else ()
    names = [t.tree for t in trees]
    kind = type(iface).__name__
    if not trees:
        if len(config.trees):
            raise ConfigError(
                f"config.trees sets {sorted(config.trees)} but {kind} trains one tree; move "
                f"those settings to config.optimizer / ema / posthoc_ema."
            )
        return ()
    if len(set(names)) != len(names):
        raise ConfigError(f"{kind}.trained_trees() names a tree twice: {names}.")
    missing = [n for n in names if n not in params]
    untrained = [k for k in params if k not in names]
    if missing or untrained:
        why = f"{missing} hold no parameters. " if missing else ""
        if untrained:
            why += f"{untrained} are in no tree (add them to a tree or to frozen_trees())."
        raise ConfigError(
            f"{kind}.trained_trees() = {names} must partition its trained parameters, whose "
            f"top-level attributes are {sorted(params)}: {why}"
        )
    unknown = [n for n in config.trees if n not in names]
    if unknown:
        raise ConfigError(f"config.trees names {unknown}, not trees of {kind} ({names}).")
    return trees


def _snapshot_writers(config, tree_cfgs: dict) -> dict:
    """Post-hoc EMA snapshot writers: {None: writer} for one tree, {tree: writer under
    posthoc_ema/<tree>} for each tree that tracks power EMAs; {} when snapshots are off."""
    if config.posthoc_ema.snapshot_every <= 0:
        return {}
    root = fileio.join(fileio.absolute(config.workdir), "posthoc_ema")
    kw = {"async_save": config.checkpoint.async_save}
    if not tree_cfgs:
        return {None: checkpoint.SnapshotWriter(root, **kw)} if config.posthoc_ema.stds else {}
    return {
        n: checkpoint.SnapshotWriter(fileio.join(root, n), **kw)
        for n, c in tree_cfgs.items()
        if c.posthoc_ema.stds
    }


def _ema_key(which: str, config: ml_collections.ConfigDict) -> str:
    decays = list(config.ema.decays)
    for name in config.trees:
        decays += list(config_lib.tree_config(config, name).ema.decays)
    names = [ema_lib.ema_name(d) for d in decays]
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
        if key.rsplit("/", 1)[-1] in ("lr", "skipped", "tripped", "finite"):  # "<tree>/lr" too
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
    fn = callbacks.make_sample_fn(
        interface_fn, sampler, config.data.shape, guidance=s.guidance,
        guidance_channels=s.guidance_channels,
    )  # fmt: skip
    key = jax.random.fold_in(jax.random.key(config.seed), step)
    x = fn(key, labels, n)
    if decode_fn is not None:
        x = decode_fn(x)
    if is_main:
        path = fileio.join(fileio.absolute(config.workdir), "samples", f"{step:08d}.png")
        callbacks.save_grid(np.asarray(x), None if labels is None else np.asarray(labels), path)
        log.info("wrote %s", path)
