"""`nnx-imagenet`: the app's command line (absl flags + ml_collections configs).

    nnx-imagenet train   --config=NAME[:preset] [--workdir=DIR_OR_GS] [--config.a.b=v ...]
    nnx-imagenet sample  --config=... --workdir=DIR [--step=N] [--ema=D] [--classes=0,1]
                         [--guidance=W] [--sampler=NAME] [--steps=N] [--num_samples=N]
                         [--out=x.npz|folder] [--grid]
    nnx-imagenet eval    --config=... --workdir=DIR --ref=REF.npz [--num_samples=50000] [...]
    nnx-imagenet prepare --what=latents|ref_stats --src=IMAGENET_ROOT --out=DIR_OR_FILE
    nnx-imagenet config  NAME[:preset] [--config.a.b=v ...]     (print the resolved config)

Everything a user can get wrong on the command line (the command, flags and their values, the
config name, preset, override keys and values, data paths) is checked before jax, orbax or
grain are imported, so a typo costs well under a second. Every error is one paragraph on stderr
(what, where, what to do) with a non-zero exit code (2: a usage, config or path mistake found
before the run; 1: the run failed; 3: the demo's quality report says FAILED; 130: stopped by
Ctrl-C outside the training loop, which itself saves and exits 0); the traceback only with
`--verbose`.
"""

import logging as py_logging
import sys
import traceback

from absl import flags, logging

from nnx_imagenet import cli_checks, cli_help
from nnx_imagenet.config_loading import config_overrides_in_argv, load_config
from nnx_imagenet.errors import UsageError

flags.DEFINE_string("config", None, "Config: a name from nnx_imagenet/configs (e.g. sit, demo) "
                    "or a .py path, optionally with :preset.")  # fmt: skip
flags.DEFINE_string("workdir", None, "Run directory (local or gs://); default config.workdir.")
flags.DEFINE_bool("verbose", False, "Show the full traceback of an error.")
flags.DEFINE_integer("step", -1, "sample/eval: checkpoint step; -1 = the newest readable one.")
flags.DEFINE_string("ema", None, "sample/eval: EMA decay to use ('' = raw weights); default "
                    "config.sample.ema / config.eval.ema.")  # fmt: skip
flags.DEFINE_string("classes", "", "sample/eval: comma-separated class labels to sample "
                    "(cycled); default all classes in turn.")  # fmt: skip
flags.DEFINE_float("guidance", None, "sample/eval: classifier-free guidance scale w ≥ 0 "
                   "(0 = off, 1 = conditional only); default config.sample.guidance.")  # fmt: skip
flags.DEFINE_string("sampler", None, "sample/eval: sampler registry name (euler, heun, ...); "
                    "default config.sample.sampler.name.")  # fmt: skip
flags.DEFINE_integer("steps", None, "sample/eval: sampler steps (≥ 1); default "
                     "config.sample.sampler.num_steps.")  # fmt: skip
flags.DEFINE_integer("num_samples", 100, "sample/eval: number of images to generate.")
flags.DEFINE_integer("batch_size", 64, "sample/eval/prepare: batch size.")
flags.DEFINE_string("out", "", "sample: .npz file or folder; prepare: output folder or .npz.")
flags.DEFINE_bool("grid", True, "sample: also write a PNG grid (one row per class).")
flags.DEFINE_integer("seed", 0, "sample/eval: sampling seed.")
flags.DEFINE_string("ref", "", "eval: reference statistics .npz (ADM or EDM format).")
flags.DEFINE_string("inception_path", "", "eval/prepare: local FID Inception weights "
                    "(.safetensors/.npz in pytorch-fid keys, or .pth) instead of the download "
                    "cache.")  # fmt: skip
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
_RUNNING = False  # set once every check passed and jax is being imported


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `nnx-imagenet` script; exits with the command's status."""
    global _RUNNING
    _RUNNING = False
    argv = list(sys.argv if argv is None else argv)
    verbose = any(a in ("--verbose", "--verbose=true", "--verbose=True") for a in argv)
    command = cli_help.command_of(argv[1:])
    try:
        code = _dispatch(argv)
    except KeyboardInterrupt:
        kept = "; checkpoints saved so far are kept (rerun the same command to resume)"
        print(f"nnx-imagenet {command or ''}: stopped by Ctrl-C"
              f"{kept if command == 'train' else ''}.", file=sys.stderr)  # fmt: skip
        code = 130
    except Exception as e:  # every error ends here: one paragraph, traceback only if asked
        if verbose:
            traceback.print_exc()
        print(cli_help.error_paragraph(command, e, verbose), file=sys.stderr)
        code = 1 if _RUNNING and not isinstance(e, cli_checks.CONFIG_ERRORS) else 2
    sys.exit(code)


def _dispatch(argv: list[str]) -> int:
    args = argv[1:]
    command = cli_help.command_of(args)
    if any(a in ("-h", "--help", "--helpshort", "--helpfull", "help") for a in args):
        print(cli_help.help_text(command, FLAGS))
        return 0
    if command is None:
        found = next((a for a in args if not a.startswith("-")), "nothing")
        raise UsageError(
            f"Expected a command ({', '.join(cli_help.COMMANDS)}); got {found!r}. Run "
            f"`nnx-imagenet --help` for the commands and `nnx-imagenet COMMAND --help` for flags."
        )
    overrides = config_overrides_in_argv(args)
    positional = _parse_flags(argv[0], args, command)
    cli_checks.check_flags_belong(command, FLAGS)
    global _RUNNING
    if command == "prepare":
        cli_checks.check_prepare_flags(FLAGS)
        _RUNNING = True
        _quiet_libraries()
        from nnx_imagenet.commands import prepare

        prepare(FLAGS)
        return 0
    spec = FLAGS.config or (positional[0] if command == "config" and positional else None)
    if spec is None:
        raise UsageError(
            f"`{command}` needs --config=NAME[:preset] (e.g. --config=demo or --config=sit:b2); "
            f"`nnx-imagenet {command} --help` lists the configs and their presets."
        )
    config = load_config(spec, overrides, check_constructors=False)
    if command == "config":
        print(cli_help.config_text(spec, overrides, config))
        return 0
    if FLAGS.workdir:
        config.workdir = FLAGS.workdir
    cli_checks.apply_sampling_flags(command, FLAGS, config)
    cli_checks.check_run(command, FLAGS, config)

    # ===== everything is checked: now import jax and run =====================================
    _RUNNING = True
    _quiet_libraries()
    from nnx_imagenet.config_loading import absolute_paths
    from nnx_imagenet.configs.common import validate

    validate(absolute_paths(config))  # the model / interface / sampler keys, by signature
    if command == "train":
        return _train(config)
    from nnx_imagenet import commands

    if command == "sample":
        commands.sample(config, FLAGS)
    else:
        commands.evaluate(config, FLAGS)
    return 0


def _parse_flags(program: str, args: list[str], command: str) -> list[str]:
    """Parse the absl flags of `args` (without the command and `--config.*` overrides);
    returns the remaining positional arguments."""
    plain, i = [], 0
    while i < len(args):
        a = args[i]
        if a.startswith("--config."):
            i += 1 if "=" in a else 2
            continue
        plain.append(a)
        i += 1
    plain.remove(command)
    FLAGS.unparse_flags()
    try:
        rest = FLAGS([program, *plain])
    except flags.Error as e:
        raise UsageError(
            f"{e}. Run `nnx-imagenet {command} --help` for the flags of {command}."
        ) from None
    positional = rest[1:]
    allowed = 1 if command == "config" else 0
    if len(positional) > allowed:
        raise UsageError(
            f"Unexpected argument(s) {' '.join(positional[allowed:])!r} after `{command}`; flags "
            f"look like --name=value (`nnx-imagenet {command} --help`)."
        )
    return positional


def _quiet_libraries() -> None:
    """Warnings only from absl / orbax; the trainer's progress lines on stderr."""
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    trainer_log = py_logging.getLogger("nnx_train.trainer")
    if not any(isinstance(h, _StderrHandler) for h in trainer_log.handlers):
        handler = _StderrHandler()
        handler.setFormatter(py_logging.Formatter("nnx-imagenet: %(message)s"))
        trainer_log.addHandler(handler)
    trainer_log.setLevel(py_logging.INFO)
    trainer_log.propagate = False


class _StderrHandler(py_logging.StreamHandler):
    """Writes to whatever `sys.stderr` is at the time of the record."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _train(config) -> int:
    from pathlib import Path

    from nnx_imagenet.run import run_train

    out = run_train(config)
    if out["preempted"]:
        return 0  # the trainer said "interrupted / preempted at step N; checkpoint saved; ..."
    print(f"trained to step {out['step']}; checkpoints in {out['checkpoint_dir']}")
    if "report" not in out:
        return 0
    from nnx_imagenet.demo.report import format_report

    workdir = Path(config.workdir).resolve()
    # the demos' own text (DMD2's adds the teacher; the video demo writes video_report.txt)
    written = workdir / out.get("report_text", "quality_report.txt")
    print(written.read_text() if written.exists() else format_report(out["report"]), end="")
    dmd = "teacher" in out["report"]  # the DMD2 demo: one loss curve per model
    curves = "loss_curve_generator.png, loss_curve_critic.png" if dmd else "loss_curve.png"
    files = out.get("files", f"samples_per_class.png, {curves}, quality_report.json, "
                             f"quality_report.txt")  # fmt: skip
    print(f"files written to {workdir}: {files}, metrics.jsonl, checkpoints/")
    if not out["report"]["passed"]:
        print(
            "nnx-imagenet train: the demo's quality report says FAILED (thresholds above); the "
            "checkpoint is kept. Train longer (--config.total_steps) or check your changes.",
            file=sys.stderr,
        )
        return 3
    return 0
