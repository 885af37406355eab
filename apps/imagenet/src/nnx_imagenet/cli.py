"""`nnx-imagenet`: the app's command line (absl flags + ml_collections config files).

    nnx-imagenet train   --config=NAME_OR_PATH[:preset] [--workdir=DIR_OR_GS] [--config.a.b=v ...]
    nnx-imagenet sample  --config=... --workdir=DIR [--num_samples=N] [--out=x.npz|folder] [--grid]
    nnx-imagenet eval    --config=... --workdir=DIR --ref=REF.npz [--num_samples=50000]
    nnx-imagenet prepare --what=latents|ref_stats --src=IMAGENET_ROOT --out=DIR_OR_FILE

`--config=demo` trains the offline digits demo (see the app README). Config names are the files
in `nnx_imagenet/configs/`; a path to your own `.py` works the same. Overrides are checked before
anything runs: an unknown key or a value of the wrong type is reported with the closest valid keys.
"""

import sys
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

from nnx_imagenet.config_loading import config_overrides_in_argv, load_config, resolve_config
from nnx_imagenet.errors import AppError

COMMANDS = ("train", "sample", "eval", "prepare")
USAGE = __doc__

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config: a name from nnx_imagenet/configs (e.g. sit, demo) or a .py path, "
    "optionally with :preset.", lock_config=False
)  # fmt: skip
flags.DEFINE_string("workdir", None, "Run directory (local or gs://); default config.workdir.")
flags.DEFINE_integer("num_samples", 100, "sample/eval: number of images to generate.")
flags.DEFINE_integer("batch_size", 64, "sample/eval/prepare: batch size.")
flags.DEFINE_string("out", "", "sample: .npz file or folder; prepare: output folder or .npz.")
flags.DEFINE_bool("grid", True, "sample: also write a PNG grid (one row per class).")
flags.DEFINE_string("ema", None, "sample/eval: EMA decay to use ('' = raw weights); default "
                    "config.sample.ema / config.eval.ema.")  # fmt: skip
flags.DEFINE_integer("seed", 0, "sample/eval: sampling seed.")
flags.DEFINE_string("ref", "", "eval: reference statistics .npz (ADM or EDM format).")
flags.DEFINE_string("inception_path", "", "eval: local FID Inception weights (.safetensors/.npz "
                    "in pytorch-fid keys, or .pth) instead of the download cache.")  # fmt: skip
flags.DEFINE_integer("inception_size", 299, "eval: Inception input size; 299 for every real "
                     "number (smaller, >= 75, only for tests).")  # fmt: skip
flags.DEFINE_string("what", "latents", "prepare: 'latents' (VAE latent shards) or 'ref_stats'.")
flags.DEFINE_string("src", "", "prepare: dataset root holding <split>/<synset>/*.JPEG.")
flags.DEFINE_string("split", "train", "prepare: split folder under --src.")
flags.DEFINE_integer("resolution", 256, "prepare: ADM centre-crop resolution.")
flags.DEFINE_string("vae", "sd-vae-ft-ema", "prepare: SD-VAE weights name (weights registry).")
flags.DEFINE_string("vae_path", "", "prepare: local VAE weights file instead of the cache.")
flags.DEFINE_integer("shard_size", 4096, "prepare: latents per shard file.")
FLAGS = flags.FLAGS


def preprocess_argv(argv: list[str]) -> list[str]:
    """Check the command and config before absl parses anything; resolve config names to paths.

    Raises:
      AppError: unknown command, unknown config / preset, unknown override key or bad value.
    """
    args = argv[1:]
    if any(a in ("-h", "--help", "--helpfull", "--helpshort") for a in args):
        print(USAGE)
        return argv
    positional = [a for a in args if not a.startswith("-")]
    if not positional or positional[0] not in COMMANDS:
        found = positional[0] if positional else "nothing"
        raise AppError(f"Expected a command ({', '.join(COMMANDS)}); got {found}.\n{USAGE}")
    command = positional[0]
    out, spec = [argv[0]], None
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--config" and i + 1 < len(args):
            a, i = f"--config={args[i + 1]}", i + 1
        if a.startswith("--config="):
            spec = a.split("=", 1)[1]
            path, preset = resolve_config(spec)
            a = f"--config={path}" + (f":{preset}" if preset else "")
        out.append(a)
        i += 1
    if command != "prepare":
        if spec is None:
            raise AppError(f"`{command}` needs --config=NAME[:preset] (e.g. --config=demo).")
        overrides = config_overrides_in_argv(args)
        load_config(spec, overrides)  # raises on unknown keys / wrong types / invalid config
    return out


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `nnx-imagenet` script."""
    argv = list(sys.argv if argv is None else argv)
    try:
        argv = preprocess_argv(argv)
    except AppError as e:
        print(f"nnx-imagenet: error: {e}", file=sys.stderr)
        sys.exit(2)
    app.run(_main, argv=argv)


def _main(argv: list[str]) -> None:
    command = next(a for a in argv[1:] if a in COMMANDS)
    if not FLAGS["verbosity"].present:  # keep orbax's INFO chatter out of the progress bar
        logging.set_verbosity(logging.WARNING)
    if command == "prepare":
        from nnx_imagenet.commands import prepare

        prepare(FLAGS)
        return
    config = _CONFIG.value
    if FLAGS.workdir:
        config.workdir = FLAGS.workdir
    from nnx_imagenet.config_loading import absolute_paths

    absolute_paths(config)
    # absl already applied --config.* overrides; re-apply nothing, only validate the result.
    from nnx_imagenet.configs.common import validate

    validate(config)
    if command == "train":
        from nnx_imagenet.run import run_train

        out = run_train(config)
        print(f"trained to step {out['step']}; checkpoints in {out['checkpoint_dir']}")
        if "report" in out:
            workdir = Path(config.workdir).resolve()
            print((workdir / "quality_report.txt").read_text(), end="")
            dmd = "teacher" in out["report"]  # the DMD2 demo: one loss curve per model
            curves = "loss_curve_generator.png, loss_curve_critic.png" if dmd else "loss_curve.png"
            print(
                f"files written to {workdir}: samples_per_class.png, {curves}, "
                "quality_report.json, quality_report.txt, metrics.jsonl, checkpoints/"
            )
        return
    from nnx_imagenet import commands

    if command == "sample":
        commands.sample(config, FLAGS)
    else:
        commands.evaluate(config, FLAGS)
