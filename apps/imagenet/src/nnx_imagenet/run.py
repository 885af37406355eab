"""`run_train(config)`: the app's side of a training run — data, the trainer, then the demo report.

The trainer (`nnx_train.trainer.train`) owns the loop, checkpoints (with the grain iterator state),
logging and resume; the app gives it the per-host grain stream (for REPA wrapped in the batch
encoder of `repa_features`, which adds `x_feature`) and, for the digits demo, writes
the sample grid, loss curve and quality report at the end (for the video demo on moving digits:
autoregressive videos, GIFs and the video report).
"""

import time

import jax
import ml_collections

from nnx_imagenet import repa_features
from nnx_imagenet.configs.common import validate
from nnx_imagenet.data.builder import build_train_dataset
from nnx_imagenet.data.pipeline import HostShard
from nnx_imagenet.errors import DataError
from nnx_train import trainer


def make_data_fn(config: ml_collections.ConfigDict):
    """The trainer's `make_data(process_index, process_count, local_batch_size)` for `config`."""

    encode = None
    if repa_features.is_repa(config):  # REPA: latents + encoder tokens computed per batch
        encode = repa_features.make_batch_encoder(config)

    def make_data(process_index: int, process_count: int, local_batch_size: int):
        shape = repa_features.source_shape(config) if encode else None
        shard = HostShard(process_index, process_count)
        ds = build_train_dataset(config, shard=shard, source_shape=shape)
        expected = config.data.global_batch_size // process_count
        if local_batch_size != expected:
            raise DataError(
                f"The trainer asks for {local_batch_size} examples per host but the pipeline "
                f"makes {expected} (global batch {config.data.global_batch_size} over "
                f"{process_count} processes)."
            )
        it = iter(ds)
        return repa_features.EncodedIterator(it, encode) if encode else it

    return make_data


def run_train(config: ml_collections.ConfigDict) -> dict:
    """Validate `config`, train it, and finish the digits demo if it is one.

    Returns:
      {"step", "preempted", "metrics", "checkpoint_dir"} and, for the digits demo, "report".
    """
    validate(config)
    dmd_demo = config.data.name == "digits" and config.interface.name == "imagenet.dmd"
    sf_demo = config.interface.name == "imagenet.self_forcing"  # the video demo's SF stage
    if dmd_demo or sf_demo:  # distilling a demo run: train that (the teacher) first if absent
        from nnx_imagenet.demo.dmd_demo import ensure_teacher

        ensure_teacher(config)
    start = time.perf_counter()
    result = trainer.train(config, make_data_fn(config))
    train_seconds = time.perf_counter() - start
    out = {
        "step": result.step,
        "preempted": result.preempted,
        "metrics": result.metrics,
        "checkpoint_dir": result.checkpoint_dir,
    }
    is_main = jax.process_index() == 0
    if dmd_demo and not result.preempted and is_main:
        from nnx_imagenet.demo.dmd_demo import finish_dmd_demo

        out["report"] = finish_dmd_demo(config, result.state)
    elif sf_demo and config.data.name == "moving_digits" and not result.preempted and is_main:
        from nnx_imagenet.demo.video_sf_demo import finish_self_forcing_demo

        out.update(finish_self_forcing_demo(config, result.state, train_seconds))
    elif config.data.name == "moving_digits" and not result.preempted and is_main:
        from nnx_imagenet.demo.video_demo import finish_video_demo

        out["report"] = finish_video_demo(config, result.state, train_seconds)
        out["report_text"] = "video_report.txt"
        out["files"] = ("videos/class_<d>.gif, videos_per_class.gif, videos_per_class.png, "
                        "loss_curve.png, video_report.json, video_report.txt")  # fmt: skip
    elif config.data.name == "digits" and not result.preempted and is_main:
        from nnx_imagenet.demo.digits_demo import finish_digits_demo

        out["report"] = finish_digits_demo(config, result.state)
    return out
