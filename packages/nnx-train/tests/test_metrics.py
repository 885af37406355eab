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


def test_resumed_segments_drop_the_abandoned_steps_and_tensorboard(tmp_path):
    """Run 1 logs steps 10..40 and dies with its last checkpoint at 20; run 2 resumes from 20 and
    logs 30..50. The file keeps everything (marked by `segment`); `read_metrics` shows one
    history: run 1 up to step 20, then run 2. TensorBoard gets the same scalars."""

    def run(start, steps, losses, tensorboard=False):
        log = metrics.MetricsLogger(str(tmp_path), total_steps=50, start_step=start,
                                    progress_bar=False, tensorboard=tensorboard)  # fmt: skip
        log.write(start, {"event": "start", "params": 3})
        for s, loss in zip(steps, losses, strict=True):
            log.write(s, {"loss": loss})
        log.close()

    run(0, [10, 20, 30, 40], [4.0, 3.0, 2.0, 1.0])
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 41, "lo')  # killed while writing
    run(20, [30, 40, 50], [2.5, 2.25, 2.0], tensorboard=True)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert lines[5] == '{"step": 41, "lo'  # the partial line was ended before run 2 appended
    raw = [json.loads(x) for x in lines[:5] + lines[6:]]
    assert [(r["segment"], r["step"]) for r in raw if "loss" in r] == [
        (0, 10), (0, 20), (0, 30), (0, 40), (1, 30), (1, 40), (1, 50)
    ]  # fmt: skip
    kept = [(r["step"], r["loss"]) for r in metrics.read_metrics(str(tmp_path / "metrics.jsonl"))
            if "loss" in r]  # fmt: skip
    assert kept == [(10, 4.0), (20, 3.0), (30, 2.5), (40, 2.25), (50, 2.0)]
    # A file written before records had `segment`: start events delimit the segments.
    old = tmp_path / "old.jsonl"
    old_lines = [json.dumps({k: v for k, v in r.items() if k != "segment"}) for r in raw]
    old.write_text('{"step": 3, "lo\n' + "\n".join(old_lines))
    assert [r["step"] for r in metrics.read_metrics(str(old)) if "loss" in r] == [
        10,
        20,
        30,
        40,
        50,
    ]

    assert _tensorboard_scalars(tmp_path / "tensorboard", "loss") == [
        (30, 2.5), (40, 2.25), (50, 2.0)
    ]  # fmt: skip


def _tensorboard_scalars(logdir, tag: str) -> list[tuple[int, float]]:
    """(step, value) of `tag` in the event files (TFRecord framing: u64 length, u32 crc, data,
    u32 crc), parsed with tensorboardX's own Event protobuf."""
    import struct

    from tensorboardX.proto.event_pb2 import Event

    out = []
    for path in sorted(logdir.rglob("events.out.tfevents.*")):
        data, pos = path.read_bytes(), 0
        while pos < len(data):
            (n,) = struct.unpack("<Q", data[pos : pos + 8])
            event = Event.FromString(data[pos + 12 : pos + 12 + n])
            pos += 12 + n + 4
            out += [(event.step, v.simple_value) for v in event.summary.value if v.tag == tag]
    return out


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
