"""Metrics: JSONL records, disabled wandb, FLOPs from XLA's cost analysis, peak FLOP/s lookup."""

import json

import jax
import jax.numpy as jnp
import pytest

from nnx_train import metrics


def test_jsonl_records_and_disabled_wandb(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    log = metrics.MetricsLogger(
        str(tmp_path), total_steps=4, wandb_mode="online", progress_bar=False
    )
    log.write(2, {"loss": jnp.float32(0.25), "finite": jnp.bool_(True), "aux/x": 1})
    log.write(4, {"loss": 0.125})
    log.close()
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [2, 4]
    assert lines[0]["loss"] == 0.25 and lines[0]["finite"] is True and lines[0]["aux/x"] == 1
    assert log._wandb is None  # WANDB_MODE=disabled wins over the configured mode


def test_other_processes_write_nothing(tmp_path):
    log = metrics.MetricsLogger(str(tmp_path / "p1"), total_steps=1, enabled=False)
    log.write(1, {"loss": 1.0})
    log.close()
    assert not (tmp_path / "p1").exists()


def test_compiled_flops_of_a_matmul_is_2mnk():
    a, b = jnp.ones((8, 16)), jnp.ones((16, 4))
    compiled = jax.jit(lambda a, b: a @ b).lower(a, b).compile()
    assert metrics.compiled_flops(compiled) == pytest.approx(2 * 8 * 16 * 4)


def test_peak_flops_lookup():
    class Dev:
        device_kind = "TPU v5 lite"

    assert metrics.detect_peak_flops(Dev()) == 197e12
    Dev.device_kind = "cpu"
    assert metrics.detect_peak_flops(Dev()) is None


def test_generation_evaluator_feeds_consumers_and_reduces():
    from nnx_train import callbacks

    class Count:
        def __init__(self):
            self.n, self.pixels = 0, set()

        def update(self, images, labels, indices):
            self.n += images.shape[0]
            self.pixels |= set(images.reshape(-1).tolist())

    evaluate = callbacks.generation_evaluator(
        lambda: [Count()],
        lambda cs: {"n": cs[0].n, "pixel": max(cs[0].pixels)},
        num_images=10,
        batch_size=8,
    )
    out = evaluate(lambda key, labels, b: jnp.zeros((b, 2, 2, 3)), step=1)
    assert out == {"n": 10, "pixel": 128}  # 10 images, 0.0 → uint8 floor(127.5·0 + 128)
