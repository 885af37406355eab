"""Checkpointer retention: keep the N newest plus every multiple of K; JSON config round trip."""

import jax.numpy as jnp

from nnx_train import checkpoint


def test_keep_last_n_plus_keep_every_k(tmp_path):
    ckpt = checkpoint.Checkpointer(str(tmp_path), keep_last=2, keep_every=3, async_save=False)
    state = {"w": jnp.arange(4.0)}
    for step in range(1, 8):
        ckpt.save(step, {"w": state["w"] * step}, None, {"seed": step})
    ckpt.wait()
    assert ckpt.all_steps() == [3, 6, 7]
    assert ckpt._stored_config(6) == {"seed": 6}
    ckpt.close()
