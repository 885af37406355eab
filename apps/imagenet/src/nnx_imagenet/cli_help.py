"""The CLI's words: the commands, which flags each takes, `--help` texts and error paragraphs.

Imports nothing heavy: `--help` and every error message cost well under a second.
"""

import difflib
from typing import Any

COMMANDS = {
    "train": "train a config (resumes from the newest checkpoint under --workdir)",
    "sample": "generate images from a checkpoint into an .npz or a folder of PNGs",
    "eval": "FID / sFID / Inception Score of a checkpoint against reference statistics",
    "prepare": "encode an ImageFolder tree to latent shards, or compute FID reference stats",
    "config": "print the resolved config (every field, after the preset and overrides)",
}
_SAMPLING = ["step", "ema", "classes", "guidance", "sampler", "steps", "num_samples",
             "batch_size", "seed"]  # fmt: skip
_PREPARE = ["what", "src", "split", "resolution", "out", "batch_size", "vae", "vae_path",
            "shard_size"]  # fmt: skip
COMMAND_FLAGS = {
    "train": ["config", "workdir"],
    "sample": ["config", "workdir", *_SAMPLING, "out", "grid"],
    "eval": ["config", "workdir", *_SAMPLING, "ref", "inception_path", "inception_size"],
    "prepare": [*_PREPARE, "inception_path"],
    "config": ["config"],
}
COMMON_FLAGS = ["verbose"]
ALL_FLAGS = sorted({f for fl in COMMAND_FLAGS.values() for f in fl} | set(COMMON_FLAGS))


def command_of(args: list[str]) -> str | None:
    """The command among the non-flag arguments (None if there is none)."""
    for a in args:
        if not a.startswith("-") and a in COMMANDS:
            return a
    return None


def configs_text() -> str:
    """One line per shipped config: its presets (default marked) — imports no jax."""
    from nnx_imagenet.config_loading import ALIASES, available_configs, config_presets

    lines = []
    for name in available_configs():
        try:
            presets, default = config_presets(name)
        except Exception as e:  # a broken config file must not break --help
            lines.append(f"  {name:<18} (cannot be loaded: {type(e).__name__}: {e})")
            continue
        alias = [a for a, n in ALIASES.items() if n == name]
        names = ", ".join(f"{p}*" if p == default else p for p in presets)
        extra = f"  (alias: {', '.join(alias)})" if alias else ""
        lines.append(f"  {name:<18} presets: {names}, smoke{extra}")
    return "\n".join(lines)


def help_text(command: str | None, flag_values: Any) -> str:
    """`nnx-imagenet --help` (command None) or `nnx-imagenet COMMAND --help`."""
    if command is None:
        cmds = "\n".join(f"  {c:<8} {d}" for c, d in COMMANDS.items())
        return (
            "usage: nnx-imagenet COMMAND [flags] [--config.a.b=value ...]\n\n"
            f"commands:\n{cmds}\n\n"
            f"configs (--config=NAME[:preset], * = default preset; PRESET,smoke = CPU size):\n"
            f"{configs_text()}\n\n"
            "`nnx-imagenet COMMAND --help` lists a command's flags; `nnx-imagenet config "
            "NAME[:preset]` prints every field of a config (override any with "
            "--config.FIELD=VALUE); --verbose shows tracebacks."
        )
    rows = []
    for name in COMMAND_FLAGS[command] + COMMON_FLAGS:
        flag = flag_values[name]
        default = "" if flag.default is None else f" (default {flag.default!r})"
        rows.append(f"  --{name:<16} {flag.help}{default}")
    usage = f"usage: nnx-imagenet {command} [flags]"
    if command in ("train", "sample", "eval"):
        usage += " --config=NAME[:preset] [--config.a.b=value ...]"
    if command == "config":
        usage = "usage: nnx-imagenet config NAME[:preset] [--config.a.b=value ...]"
    text = f"{usage}\n\n{COMMANDS[command]}\n\nflags:\n" + "\n".join(rows)
    if command != "prepare":
        text += (
            f"\n\nconfigs (* = default preset):\n{configs_text()}\n\n"
            "`nnx-imagenet config NAME[:preset]` prints every field of a config; override any "
            "field with --config.FIELD=VALUE (e.g. --config.optimizer.lr=2e-4)."
        )
    return text


def config_text(spec: str, overrides: list[str], config: Any) -> str:
    """Every field of `config` as `--config.FIELD=VALUE` lines (the override syntax), by section."""
    from nnx_imagenet.config_loading import flat_keys

    head = f"# nnx-imagenet config {spec}" + "".join(f" --config.{o}" for o in overrides)
    lines, section = [head], None
    for key in flat_keys(config):
        value = config
        for part in key.split("."):
            value = value[part]
        top = key.split(".")[0]
        if top != section and "." in key:
            lines.append(f"# {top}")
        section = top if "." in key else None
        lines.append(f"--config.{key}={value!r}")
    return "\n".join(lines)


def error_paragraph(command: str | None, error: BaseException, verbose: bool) -> str:
    """`error` as one paragraph: what went wrong, where, what to do (the message's job); for an
    error that is not one of ours, its type and how to get the traceback."""
    msg = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    where = f"nnx-imagenet {command}" if command else "nnx-imagenet"
    if _is_ours(error):
        return f"{where}: error: {msg or type(error).__name__}"
    hint = "" if verbose else " Rerun with --verbose for the traceback."
    return (
        f"{where}: unexpected error: {type(error).__name__}: {msg} (not one of nnx-diffusion's "
        f"own checks: likely an unsupported setup or a bug; please report it with the "
        f"traceback).{hint}"
    )


def did_you_mean(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=2)
    return f" Did you mean {' or '.join(close)}?" if close else ""


def _is_ours(error: BaseException) -> bool:
    """Errors raised by nnx-diffusion's packages (their messages say what to do), file-system
    errors (they name the path)."""
    module = type(error).__module__ or ""
    return module.startswith("nnx_") or isinstance(error, OSError)
