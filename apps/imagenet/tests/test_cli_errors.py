"""Bad command lines through the real `nnx-imagenet` entry point: each must exit non-zero with one
paragraph on stderr that names the problem (and the fix), no traceback, and without importing
jax, orbax or grain (checked in `sys.modules` of the process that ran them all, not by timing).

The whole list runs in one fresh interpreter (the driver below calls `cli.main` once per command
line and records exit code, stdout and stderr); a few run as their own processes to check the
console behaviour itself (exit codes, `--help`, `--verbose`).
"""

import json
import re
import subprocess
import sys
import textwrap

import pytest

HEAVY = ("jax", "orbax", "grain", "flax", "optax")


def _bad_inputs(tmp) -> list[tuple[list[str], str]]:
    """(argv after the program name, a regex the error must contain)."""
    run = tmp / "run"  # a run directory with checkpoint folders of steps 30 and 60
    for step in (30, 60):
        (run / "checkpoints" / str(step)).mkdir(parents=True)
    empty = tmp / "empty"
    empty.mkdir()
    ref = tmp / "ref.npz"
    ref.write_bytes(b"")
    pth = tmp / "inception.pth"
    pth.write_bytes(b"")
    broken = tmp / "broken_config.py"
    broken.write_text("def get_config(arg):\n    return 1 +\n")
    tree = tmp / "tree"
    (tree / "train" / "a").mkdir(parents=True)
    d = ["--config=demo", f"--workdir={run}"]
    s = ["train", "--config=sit:b2"]
    return [
        ([], r"Expected a command \(train, sample, eval, prepare, config\); got 'nothing'"),
        (["trian", "--config=sit"], r"got 'trian'"),
        (["train"], r"needs --config=NAME\[:preset\]"),
        (["train", "--config=dmeo"], r"Unknown config 'dmeo'. Did you mean demo"),
        (["train", "--config=sit:b3"], r"Unknown preset 'b3'; this config has: b2, xl2"),
        (["train", f"--config={tmp / 'nope.py'}"], r"nope.py does not exist"),
        (["train", f"--config={broken}"], r"broken_config.py failed to load: SyntaxError"),
        ([*s, "--config.optimizer.lrr=1"], r"'optimizer.lrr'. Closest valid keys: optimizer.lr"),
        ([*s, "--config.optimizer.lr=-1e-4"], r"optimizer.lr must be finite and > 0.*got -0.0001"),
        ([*s, "--config.optimizer.lr=nan"], r"optimizer.lr must be finite and > 0"),
        ([*s, "--config.optimizer.lr=abc"], r"holds a float.*cannot parse 'abc'"),
        ([*s, "--config.optimizer.lr"], r"--config.optimizer.lr has no value"),
        ([*s, "--config.sample.guidance=-2"], r"sample.guidance must be a finite scale w ≥ 0"),
        ([*s, "--config.sample.sampler.num_steps=0"], r"sample.sampler.num_steps must be ≥ 1"),
        ([*s, "--config.total_steps=0"], r"total_steps must be ≥ 1; got 0"),
        ([*s, "--config.eval.every_steps=100"], r"eval.every_steps = 100: .*`nnx-imagenet eval"),
        ([*s, "--config.model.name=ditt"], r"Unknown model name 'ditt'. Did you mean 'dit'"),
        ([*s, "--config.data.name=imagefolder"], r"Did you mean 'image_folder'"),
        ([*s, "--config.data.num_classes=2000"], r"model.num_classes = 1000: labels ≥ 1000"),
        (s, r"data.kwargs.root is empty for data.name='latents'"),
        ([*s, "--config.data.kwargs.root=/nonexistent/x"], r"No such folder /nonexistent/x"),
        ([*s, f"--config.data.kwargs.root={empty}"], r"manifest.json \(latent shards"),
        (
            [*s, "--config.data.name=image_folder", f"--config.data.kwargs.root={tree}"],
            r"makes 256×256 RGB images .* data.shape = \(32, 32, 4\)",
        ),
        (
            ["train", "--config=sit:smoke", f"--config.data.kwargs.root={tree}"],
            r"Smoke presets train on synthetic data.*--config.data.name=latents",
        ),
        (["train", "--config=demo", "--config.data.kwargs.held_out=1.5"], r"held_out .* \(0, 1\)"),
        ([*s, "--config.data.kwargs.num_threads=0"], r"data.kwargs.num_threads must be ≥ 1"),
        ([*s, "--num_samples=3"], r"--num_samples is not a flag of `train`"),
        ([*s, "--nope=1"], r"Unknown command line flag 'nope'"),
        ([*s, "extra"], r"Unexpected argument\(s\) 'extra'"),
        (["sample", "--config=demo", f"--workdir={empty}"], r"No checkpoint under .*empty"),
        (["train", "--config=demo", f"--workdir={ref}"], r"ref.npz is a file; a run directory"),
        ([*s, "--config.sample.ema=0.5"], r"sample.ema = '0.5' must be '' .* \(0.9999,\)"),
        (["sample", *d, "--guidance=-1"], r"--guidance must be a finite .* w ≥ 0"),
        (["sample", *d, "--guidance=inf"], r"--guidance must be a finite"),
        (["sample", *d, "--steps=0"], r"--steps \(sampler steps\) must be ≥ 1"),
        (["sample", *d, "--sampler=eulr"], r"Unknown sampler name 'eulr'. Did you mean 'euler'"),
        (["sample", *d, "--classes=3,10"], r"labels must lie in \[0, 10\).*\[10\]"),
        (["sample", *d, "--classes=a"], r"comma-separated integers"),
        (["sample", *d, "--ema=0.5"], r"not one of the run's EMAs \(ema.decays = \(0.999,\)\)"),
        (["sample", *d, "--step=7"], r"--step=7: no checkpoint .* steps 30, 60"),
        (["sample", *d, "--num_samples=0"], r"--num_samples must be ≥ 1"),
        (["sample", *d, "--ref=x.npz"], r"--ref is not a flag of `sample`"),
        (["eval", *d], r"eval needs --ref=REF.npz"),
        (["eval", *d, "--ref=/nonexistent.npz"], r"No such file /nonexistent.npz"),
        (["eval", *d, f"--ref={ref}", "--inception_path=/x.safetensors"], r"No such file /x"),
        (
            ["eval", *d, f"--ref={ref}", f"--inception_path={pth}"],
            r"torch pickle, which needs torch.*pip install torch",
        ),
        (["eval", *d, f"--ref={ref}", "--inception_size=10"], r"--inception_size must be ≥ 75"),
        (["prepare", "--what=latent", "--src=/x"], r"--what must be .* Did you mean latents"),
        (["prepare"], r"prepare needs --src=DATASET_ROOT"),
        (["prepare", "--src=/nonexistent"], r"No such folder /nonexistent"),
        (["prepare", f"--src={tree}", "--split=val", "--out=o"], r"No such folder .*tree/val"),
        (["config", "sit:b9"], r"Unknown preset 'b9'"),
    ]


DRIVER = textwrap.dedent(
    """
    import contextlib, io, json, sys
    sys.modules["torch"] = None  # as on a machine without torch (find_spec -> None)
    from nnx_imagenet import cli
    results = []
    for argv in json.loads(sys.argv[1]):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli.main(["nnx-imagenet", *argv])
                code = 0
            except SystemExit as e:
                code = e.code
        results.append({"code": code, "out": out.getvalue(), "err": err.getvalue()})
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in json.loads(sys.argv[2]))
    print(json.dumps({"results": results, "heavy": heavy}))
    """
)


def test_bad_command_lines_fail_fast_with_one_paragraph(tmp_path):
    cases = _bad_inputs(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps([a for a, _ in cases]), json.dumps(HEAVY)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.splitlines()[-1])
    assert report["heavy"] == [], "validation imported " + ", ".join(report["heavy"][:5])
    failures = []
    for (argv, pattern), r in zip(cases, report["results"], strict=True):
        err = r["err"].strip()
        ok = (
            r["code"] == 2
            and err.startswith("nnx-imagenet")
            and ": error: " in err
            and "\n" not in err  # one paragraph, no traceback
            and re.search(pattern, err)
            and r["out"] == ""
        )
        if not ok:
            failures.append(f"nnx-imagenet {' '.join(argv)} → exit {r['code']}, {err!r}, "
                            f"wanted {pattern!r}")  # fmt: skip
    assert not failures, "\n".join(failures)


def _cli(*args, cwd=None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", "from nnx_imagenet.cli import main; main()", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=cwd)


def test_help_lists_commands_configs_presets_and_flags():
    top = _cli("--help")
    assert top.returncode == 0, top.stderr
    for word in ("train", "sample", "eval", "prepare", "config", "sit ", "b2, xl2*, smoke",
                 "alias: demo", "nnx-imagenet config NAME[:preset]"):  # fmt: skip
        assert word in top.stdout, word
    sample = _cli("sample", "--help")
    assert sample.returncode == 0, sample.stderr
    for flag in ("--step", "--ema", "--classes", "--guidance", "--sampler", "--steps",
                 "--num_samples", "--verbose", "sit ", "nnx-imagenet config"):  # fmt: skip
        assert flag in sample.stdout, flag
    assert "--ref" not in sample.stdout  # only the command's own flags
    assert "--inception_path" in _cli("eval", "--help").stdout


def test_config_command_prints_the_resolved_config_as_overrides():
    out = _cli("config", "sit:b2", "--config.optimizer.lr=3e-4")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "--config.model.hidden_size=768" in lines and "--config.optimizer.lr=0.0003" in lines
    assert "--config.data.kwargs.root=''" in lines


def test_verbose_adds_the_traceback_and_exit_codes():
    plain = _cli("train", "--config=sit:b2", "--config.optimizer.lr=-1")
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    verbose = _cli("train", "--config=sit:b2", "--config.optimizer.lr=-1", "--verbose")
    assert verbose.returncode == 2 and "Traceback" in verbose.stderr
    assert verbose.stderr.strip().splitlines()[-1] == plain.stderr.strip()


def test_unexpected_errors_are_one_paragraph_that_points_to_verbose(monkeypatch, capsys):
    from nnx_imagenet import cli, cli_checks

    def boom(*a, **k):
        raise KeyError("surprise")

    monkeypatch.setattr(cli_checks, "check_run", boom)
    with pytest.raises(SystemExit) as e:
        cli.main(["nnx-imagenet", "train", "--config=demo:smoke"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "\n" not in err
    assert "unexpected error: KeyError: 'surprise'" in err and "--verbose" in err


def test_a_failed_demo_report_exits_3(monkeypatch, capsys):
    from nnx_imagenet import cli, run

    report = {"passed": False, "classifier_val_accuracy": 0.97, "sample_accuracy": 0.12,
              "per_class_sample_accuracy": [0.1] * 10, "fd_samples_vs_train": 12.0,
              "fd_val_vs_train": 1.3, "num_samples": 100, "min_classifier_accuracy": 0.95,
              "min_sample_accuracy": 0.9}  # fmt: skip
    fake = {"step": 4, "preempted": False, "metrics": {}, "checkpoint_dir": "c", "report": report}
    monkeypatch.setattr(run, "run_train", lambda config: fake)
    monkeypatch.setattr("nnx_imagenet.configs.common.validate", lambda c, **k: c)
    with pytest.raises(SystemExit) as e:
        cli.main(["nnx-imagenet", "train", "--config=demo:smoke", "--workdir=/tmp/x"])
    out = capsys.readouterr()
    assert e.value.code == 3 and "result : FAILED" in out.out
    assert "quality report says FAILED" in out.err


def test_missing_inception_weights_name_the_flag_and_the_torch_step(monkeypatch):
    from nnx_backbones.errors import WeightsNotFoundError
    from nnx_eval import inception_weights
    from nnx_imagenet import commands
    from nnx_imagenet.errors import AppError

    def offline(path=None):
        raise WeightsNotFoundError("pt_inception-2015-12-05-6726825d.pth is not in the cache.")

    monkeypatch.setattr(inception_weights, "load_inception", offline)
    with pytest.raises(AppError, match=r"not in the cache\. Offline, pass the weights with "
                       r"--inception_path=FILE.*pip install torch"):  # fmt: skip
        commands._load_inception(None)
