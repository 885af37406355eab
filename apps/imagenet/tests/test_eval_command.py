"""`nnx-imagenet eval` from a real checkpoint: `demo:smoke` (8×8 grey digits) trains 4 steps,
then the eval command (through `cli.main`: flags parsed and checked) generates 8 samples from
the checkpoint, feeds them (grey → RGB) to an Inception loaded from a local random-weights file
in the pytorch-fid layout (`--inception_path`) and compares them with hand-written ADM reference
statistics; it must write `eval_<step>.json` with finite FID, sFID and IS. The numbers are
meaningless (random Inception); what is checked is that the path runs end to end and writes
what it documents."""

import json

import jax
import numpy as np
import pytest
from flax import nnx

from nnx_eval.inception import InceptionV3FID
from nnx_eval.inception_weights import save_inception_weights
from nnx_imagenet import cli
from nnx_imagenet.config_loading import load_config
from nnx_imagenet.run import run_train


def _random_inception() -> InceptionV3FID:
    """The FID Inception with random He-scaled kernels and unit 1-D variables (BN scale, mean,
    var, biases), filled from its abstract shapes (an eager random init takes ~18 s on CPU)."""
    graphdef, state = nnx.split(nnx.eval_shape(lambda: InceptionV3FID(rngs=nnx.Rngs(0))))
    rng = np.random.default_rng(0)

    def fill(s):
        if len(s.shape) < 2:
            return np.ones(s.shape, np.float32)
        fan_in = int(np.prod(s.shape[:-1]))
        return (rng.standard_normal(s.shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    return nnx.merge(graphdef, jax.tree.map(fill, state))


@pytest.mark.filterwarnings("ignore:Covariance of .* estimated from only:UserWarning")
def test_eval_command_writes_finite_metrics_from_a_checkpoint(tmp_path):
    workdir = tmp_path / "run"
    overrides = [
        f"workdir={workdir}", f"data.kwargs.root={tmp_path / 'digits'}", "log.progress_bar=False",
    ]  # fmt: skip
    config = load_config("demo:smoke", overrides)
    assert run_train(config)["step"] == 4

    weights = tmp_path / "inception_random.safetensors"
    save_inception_weights(_random_inception(), weights)
    # ADM layout; a standard normal in both feature spaces. At the 75² test input the spatial
    # (mixed_6/conv, first 7 channels) features are 7·3·3 = 63-dim (2023 = 7·17·17 at 299²).
    ref = tmp_path / "ref.npz"
    np.savez(ref, mu=np.zeros(2048), sigma=np.eye(2048), mu_s=np.zeros(63), sigma_s=np.eye(63))

    with pytest.raises(SystemExit) as e:  # the README's eval command, through the CLI
        cli.main([
            "nnx-imagenet", "eval", "--config=demo:smoke", f"--workdir={workdir}",
            f"--config.data.kwargs.root={tmp_path / 'digits'}", f"--ref={ref}",
            "--num_samples=8", "--batch_size=8", f"--inception_path={weights}",
            "--inception_size=75",
        ])  # fmt: skip
    assert e.value.code == 0
    out = json.loads((workdir / "eval_00000004.json").read_text())
    assert out["step"] == 4 and out["num_samples"] == 8
    for key in ("fid", "sfid", "inception_score"):
        assert isinstance(out[key], float) and np.isfinite(out[key]), (key, out[key])
    assert out["fid"] > 0.0 and out["inception_score"] >= 1.0  # FID ≥ 0, IS = exp(KL) ≥ 1
