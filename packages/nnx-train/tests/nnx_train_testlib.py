"""Shared test helpers: a tiny flow-matching interface, a grain data source, configs, and a
`main()` so tests can run training in real subprocesses:

    python nnx_train_testlib.py CONFIG_JSON OUT_NPZ [kill|term|fsize|none] [STEP]

runs `train`, optionally SIGKILLs / SIGTERMs itself right after step STEP (or, with `fsize`,
lets no file grow from then on: a disk-full stand-in), and writes the final parameters to
OUT_NPZ. Every step prints "step N" to stderr, the progress `wait_for` watches.
"""

import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from nnx_interfaces.base import Interfaces, TimeDomain, TreeUpdate
from nnx_train import config as config_lib
from nnx_train import registry, trainer


class TinyFlow(Interfaces):
    """x_t = (1 − t)·x + t·n, velocity target n − x (flow matching); `blowup` scales the loss so
    tests can make it non-finite."""

    def __init__(self, network, train_time_dist_type="uniform", *, blowup: float = 1.0, rngs=None):
        super().__init__(network, train_time_dist_type, rngs=rngs)
        self.blowup = blowup

    @property
    def time_domain(self):
        return TimeDomain(noise=1.0, data=0.0)

    def alpha_sigma(self, t):
        return 1.0 - t, t

    def c_in(self, t):
        return jnp.ones_like(t)

    def c_out(self, t):
        return jnp.ones_like(t)

    def c_skip(self, t):
        return jnp.zeros_like(t)

    def c_noise(self, t):
        return t

    def sample_t(self, shape):
        return jax.random.uniform(self.rngs.time(), shape)

    def sample_n(self, shape):
        return jax.random.normal(self.rngs.noise(), shape)

    def sample_x_t(self, x, n, t):
        return self.bcast_right(1.0 - t, x) * x + self.bcast_right(t, x) * n

    def target(self, x, n, t, *args, **kwargs):
        return n - x

    def pred(self, x_t, t, *args, **kwargs):
        return self.network(x_t, t, **kwargs)

    def score(self, x_t, t, *args, **kwargs):
        raise NotImplementedError

    def loss(self, x, *args, return_aux=False, y=None, **kwargs):
        t = self.sample_t((x.shape[0],))
        n = self.sample_n(x.shape)
        x_t = self.sample_x_t(x, n, t)
        out = self.network(x_t, t, y=y, train=True)
        err = self.mean_flat((out - self.target(x, n, t)) ** 2)
        loss = jnp.mean(err) * self.blowup
        if return_aux:
            return loss, {
                "mse_t_lt_half": jnp.sum(err * (t < 0.5)) / jnp.maximum(jnp.sum(t < 0.5), 1)
            }
        return loss


class DetRegress(TinyFlow):
    """Deterministic loss (no random draws): mean over examples of ‖net(x, t=½) − x‖², so the
    mean over equal micro-batches equals the full-batch loss (grad-accumulation test)."""

    def loss(self, x, *args, return_aux=False, y=None, **kwargs):
        t = jnp.full((x.shape[0],), 0.5)
        loss = jnp.mean(self.mean_flat((self.network(x, t, y=y) - x) ** 2))
        return (loss, {}) if return_aux else loss


class TwoTrees(TinyFlow):
    """Two trained trees and a frozen teacher: the flow network ("network", updated every
    `every` steps by `loss`) and a linear critic ("critic", every step, `critic_loss`: regress
    the frozen teacher's output on the data, plus the network's output held fixed)."""

    def __init__(self, network, train_time_dist_type="uniform", *, every=3, blowup=1.0, rngs=None):
        super().__init__(network, train_time_dist_type, blowup=blowup, rngs=rngs)
        self.every = every
        self.critic = nnx.Linear(2, 2, rngs=nnx.Rngs(1))
        self.teacher = nnx.Linear(2, 2, rngs=nnx.Rngs(2))

    def trained_trees(self):
        return (
            TreeUpdate("network", "loss", every=self.every),
            TreeUpdate("critic", "critic_loss"),
        )

    def frozen_trees(self):
        return ("teacher",)

    def critic_loss(self, x, *args, return_aux=False, y=None, **kwargs):
        held = self.network(x, jnp.full((x.shape[0],), 0.5), y=y)
        loss = jnp.mean((self.critic(x) - self.teacher(x) - 0.1 * held) ** 2)
        return (loss, {"held": jnp.mean(held)}) if return_aux else loss


def tiny_dmd2(network, *, generator_steps=1, fake_updates=5, guidance=1.0):
    """DMD2 with generator, fake score and (random) teacher all SiT copies of `network` (the
    tiny MLP or DiT with 3 classes), the GAN head on the hidden layer after block 1."""
    from nnx_interfaces.dmd import DMD
    from nnx_interfaces.sit import SiTInterface

    def sit(net):
        return SiTInterface(net, "uniform", t_shift_base=None)

    teacher, fake = sit(nnx.clone(network)), sit(nnx.clone(network))
    return DMD(
        sit(network), fake, teacher, generator_steps=generator_steps, fake_updates=fake_updates,
        guidance=guidance, null_label=3, gan_weight_generator=3e-3, gan_weight_critic=1e-2,
        gan_hidden_at=1,
        gan_channels=getattr(network, "hidden_size", None) or network.input_proj.out_features,
    )  # fmt: skip


registry.register("interface", "tiny_flow", TinyFlow)
registry.register("interface", "tiny_dmd2", tiny_dmd2)
registry.register("interface", "det_regress", DetRegress)
registry.register("interface", "two_trees", TwoTrees)

DATA = np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32) * [1.0, 0.3]
LABELS = (np.arange(64) % 3).astype(np.int32)
# 4×4×1 "images" in [−1, 1]: a class-dependent gradient plus noise.
IMAGES = np.clip(
    np.linspace(-1, 1, 16).reshape(1, 4, 4, 1) * (LABELS[:, None, None, None] - 1)
    + 0.1 * np.random.default_rng(1).normal(size=(64, 4, 4, 1)),
    -1,
    1,
).astype(np.float32)


def make_data(process_index: int, process_count: int, local_batch: int, images: bool = False):
    """Grain iterator: shuffled, repeated, global batches sliced to this process's rows."""
    global_batch = local_batch * process_count
    xs = IMAGES if images else DATA
    source = [{"x": xs[i], "y": LABELS[i]} for i in range(len(xs))]
    ds = grain.MapDataset.source(source).shuffle(seed=7).repeat(None).batch(global_batch)
    lo, hi = process_index * local_batch, (process_index + 1) * local_batch
    ds = ds.map(lambda b: {k: v[lo:hi] for k, v in b.items()})
    return iter(ds.to_iter_dataset())


def tiny_config(workdir: str, **overrides) -> ml_collections.ConfigDict:
    c = config_lib.default_config()
    c.workdir = workdir
    c.total_steps = 6
    c.data.global_batch_size = 8
    c.data.num_classes = 3
    c.model.name = "mlp"
    c.model.data_shape = (2,)
    c.model.width = 16
    c.model.depth = 1
    c.model.num_classes = 3
    c.interface = ml_collections.ConfigDict({"name": "tiny_flow"})
    c.optimizer.lr = 1e-2
    c.optimizer.warmup_steps = 2
    c.ema.decays = (0.9, 0.99)
    c.posthoc_ema.stds = (0.1,)
    c.checkpoint.every_steps = 2
    c.checkpoint.async_save = True
    c.log.every_steps = 2
    c.log.progress_bar = False
    for key, value in overrides.items():
        node = c
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return c


def make_image_data(process_index: int, process_count: int, local_batch: int):
    return make_data(process_index, process_count, local_batch, images=True)


def dit_config(workdir: str, **overrides) -> ml_collections.ConfigDict:
    """SiT + a tiny DiT on 4×4×1 images, Euler sample grids with CFG, post-hoc EMA snapshots."""
    c = tiny_config(workdir)
    c.data.shape = (4, 4, 1)
    c.model = ml_collections.ConfigDict(
        {"name": "dit", "input_size": 4, "patch_size": 2, "in_channels": 1, "hidden_size": 16,
         "depth": 1, "num_heads": 2, "mlp_ratio": 2.0, "num_classes": 3}
    )  # fmt: skip
    c.interface = ml_collections.ConfigDict(
        {"name": "sit", "train_time_dist_type": "logitnormal", "t_shift_base": None}
    )
    c.ema.decays = (0.9,)
    c.posthoc_ema.snapshot_every = 2
    c.sample.every_steps = 6
    c.sample.num_images = 6
    c.sample.guidance = 2.0
    c.sample.ema = "0.9"
    c.sample.sampler = ml_collections.ConfigDict({"name": "euler", "num_steps": 2})
    for key, value in overrides.items():
        node = c
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return c


def params_np(state) -> dict:
    """Parameters as host arrays keyed by path (gathered from every process if needed)."""
    params = state["params"]
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        params = multihost_utils.process_allgather(params, tiled=True)
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in flat}


def wait_for(procs: list[subprocess.Popen], quiet_s: float = 300.0) -> list[tuple[str, str]]:
    """Wait for every process to exit; return their (stdout, stderr).

    Progress-based deadline: a process is killed only after `quiet_s` seconds without any new
    output from any of them (the trainer subprocesses print every step), scaled up by the load
    per core, so a slow, busy machine is not mistaken for a hang."""
    outs = [[[], []] for _ in procs]
    last = [time.monotonic()]

    def drain(stream, sink):
        for line in iter(stream.readline, ""):
            sink.append(line)
            last[0] = time.monotonic()

    threads = [
        threading.Thread(target=drain, args=(stream, outs[i][j]), daemon=True)
        for i, p in enumerate(procs)
        for j, stream in enumerate((p.stdout, p.stderr))
    ]
    for t in threads:
        t.start()
    while any(p.poll() is None for p in procs):
        load = os.getloadavg()[0] / (os.cpu_count() or 1)
        if time.monotonic() - last[0] > quiet_s * max(1.0, load):
            for p in procs:
                p.kill()
            break
        time.sleep(0.2)
    for t in threads:
        t.join()
    return ["".join(o[0]) for o in outs], ["".join(o[1]) for o in outs]


def popen(args: list[str], env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1
    )


def wait_for_saves() -> None:
    """Block until orbax's background save threads have finished (progress-based, no clock)."""
    while any(t.name in ("save_finalize", "async_save") for t in threading.enumerate()):
        time.sleep(0.01)


def main(argv: list[str]) -> int:
    cfg = ml_collections.ConfigDict(json.loads(argv[1]))
    out, mode = argv[2], argv[3] if len(argv) > 3 else "none"
    at = int(argv[4]) if len(argv) > 4 else -1

    def hook(step: int) -> None:
        print(f"step {step}", file=sys.stderr, flush=True)
        if step == at and mode == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if step == at and mode == "term":
            os.kill(os.getpid(), signal.SIGTERM)
        if mode == "fsize" and step >= at:
            # From step `at` on, no file may grow past 4 KiB (EFBIG, like a full disk; the
            # array files fail, in the background). Each hook waits for
            # the background save to end, so the trainer's poll right after sees its outcome.
            wait_for_saves()
            if step == at:
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))

    data = make_image_data if len(cfg.data.shape) == 3 else make_data
    result = trainer.train(cfg, data, step_callback=hook)
    params = params_np(result.state)
    if jax.process_index() == 0:
        loss = result.metrics.get("loss", np.nan)  # a multi-tree run logs "<tree>/loss"
        np.savez(out, step=result.step, preempted=result.preempted, loss=loss, **params)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
