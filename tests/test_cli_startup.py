"""The CLI answers ``--help`` and argument errors without importing torch, numpy or the Hugging Face libraries
(each of them takes seconds to import on a busy laptop), and its torch-free name tables are the registries' names.

The timings themselves are in bench/cli_startup.py; here the assertion is on what gets imported.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sdkit import cli, names

HEAVY = ("torch", "numpy", "diffusers", "transformers", "PIL", "scipy", "jaxtyping", "safetensors", "huggingface_hub")

PROBE = """
import json, sys
from sdkit.cli import main
try:
    rc = main(sys.argv[1:])
except SystemExit as e:  # --help and argparse's own errors exit
    rc = e.code
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(HEAVY))
print(json.dumps({"rc": rc, "heavy": heavy}))
"""


def run_cli(*argv: str, cwd: str | None = None) -> tuple[dict[str, object], str]:
    """Run ``sdkit`` in a fresh interpreter; its exit code, the heavy modules it imported, and its stderr."""
    code = f"HEAVY = {HEAVY!r}\n{PROBE}"
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=cwd, timeout=300)
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


@pytest.mark.parametrize(
    "args,name",
    [
        (["--sampler", "bogus"], "sampler"),
        (["--sampler", "DPM++ 2M Sideways"], "sampler"),
        (["--schedule", "sideways"], "schedule"),
        (["--steps", "0"], "steps"),
        (["--seed", str(2**64)], "seed"),
        (["--seed", "-2"], "seed"),
        (["--cfg", "nan"], "cfg"),
        (["--width", "65"], "width"),
        (["--height", "0"], "height"),
        (["--batch-size", "0"], "batch_size"),
        (["--width", "8192", "--height", "8192"], "width x height"),
        (["--clip-skip", "0"], "clip-skip"),
        (["--hires-scale", "0"], "hires-scale"),
        (["--hires-steps", "-1"], "hires-steps"),
        (["--hires-strength", "1.5"], "hires-strength"),
        (["--hires-upscaler", " "], "hires-upscaler"),
        (["--threads", "0"], "threads"),
        (["--threads", "100000"], "threads"),
        (["-o", "out.gif"], "output"),
        (["-o", "no/such/folder/out.png"], "output"),
    ],
)
def test_argument_errors_import_no_torch(tmp_path, args, name):
    result, err = run_cli("generate", "a cat", *args, cwd=str(tmp_path))
    assert result == {"rc": 2, "heavy": []}, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and name in lines[0].lower()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv", [["--help"], ["generate", "--help"], ["info", "--help"], ["generate"], ["nope"]])
def test_help_and_usage_errors_import_no_torch(argv):
    result, _ = run_cli(*argv)
    assert result["heavy"] == [] and result["rc"] in (0, 2)


def test_threads_option_is_documented():
    text = cli._parser()._subparsers._group_actions[0].choices["generate"].format_help()  # type: ignore[union-attr]
    assert "--threads" in text and "OMP_NUM_THREADS" in text


def test_name_tables_are_the_registries_names():
    from sdkit.samplers import SAMPLERS
    from sdkit.schedules import SCHEDULES

    assert names.SAMPLER_NAMES == tuple(SAMPLERS)
    assert names.SCHEDULE_NAMES == tuple(SCHEDULES)


def test_cli_accepts_exactly_the_schedule_spellings_make_sigmas_accepts():
    """The CLI's early check and ``make_sigmas`` (after loading) agree on every spelling, good and bad."""
    from sdkit.denoisers import DiscreteSchedule, alphas_cumprod_from_betas
    from sdkit.schedules import make_sigmas

    model = DiscreteSchedule(alphas_cumprod_from_betas(1000, 0.00085, 0.012, "scaled_linear"))
    spellings = [s for k in names.SCHEDULE_NAMES for s in (k, k.upper(), k.replace("_", " "), k.replace("_", "-"))]
    spellings += [names.SCHEDULE_DISPLAY[k] for k in names.SCHEDULE_NAMES] + ["sideways", "", "karras2", "custom"]
    for spelling in spellings:
        try:
            make_sigmas(spelling, 4, model)
            accepted = True
        except ValueError:
            accepted = False
        assert (names.schedule_key(spelling) in names.SCHEDULE_NAMES) == accepted, spelling


@pytest.fixture
def restore_threads():
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _stop_before_loading(monkeypatch):
    """Replace ``sdkit.load`` by a refusal, so ``main`` sets the threads and stops (no model runs)."""
    import sdkit

    def refuse(*args, **kwargs):
        raise ValueError("stopped before loading")

    monkeypatch.setattr(sdkit, "load", refuse)


@pytest.mark.parametrize(
    "argv,omp,cpus,expected",
    [
        (["--threads", "2"], None, 2, 2),  # the option wins over the default ...
        (["--threads", "1"], "2", 8, 1),  # ... and over OMP_NUM_THREADS
        ([], None, 2, 1),  # a 2-core laptop: one thread
        ([], None, 1, 1),
        ([], None, 6, 3),
        ([], None, 64, 4),
        ([], None, None, 1),  # os.cpu_count() may not know
    ],
)
def test_thread_count(monkeypatch, tmp_path, restore_threads, capsys, argv, omp, cpus, expected):
    import torch

    torch.set_num_threads(7)  # a value none of the cases sets
    _stop_before_loading(monkeypatch)
    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    monkeypatch.setattr(cli.os, "cpu_count", lambda: cpus)
    monkeypatch.delattr(cli.os, "sched_getaffinity", raising=False)  # the cpu_count fallback
    assert cli.main(["generate", "x", "-o", str(tmp_path / "o.png"), *argv]) == 2
    assert "stopped before loading" in capsys.readouterr().err
    assert torch.get_num_threads() == expected


def test_omp_num_threads_is_left_to_torch(monkeypatch, tmp_path, restore_threads, capsys):
    import torch

    torch.set_num_threads(7)
    _stop_before_loading(monkeypatch)
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    assert cli.main(["generate", "x", "-o", str(tmp_path / "o.png")]) == 2
    assert torch.get_num_threads() == 7  # torch read OMP_NUM_THREADS at start; the CLI does not override it


@pytest.mark.parametrize("omp,threads,cpus,expected", [(None, None, 6, 3), (None, None, 2, 1), ("2", None, 6, 7),
                                                       (None, 2, 64, 2)])  # fmt: skip
def test_notebooks_get_the_same_default_threads(monkeypatch, restore_threads, omp, threads, cpus, expected):
    """``demo_kit`` (every notebook's first call) sets the CLI's default thread count, unless told otherwise."""
    import os

    import torch

    from sdkit.demo import demo_kit

    torch.set_num_threads(7)  # a value none of the cases sets (OMP_NUM_THREADS set: torch is left alone)
    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    monkeypatch.setattr(os, "cpu_count", lambda: cpus)
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    demo_kit("shapes", threads=threads)
    assert torch.get_num_threads() == expected


def test_threads_follow_the_cpus_this_process_may_use(monkeypatch, tmp_path, restore_threads, capsys):
    """Under ``taskset -c 0`` on a 64-core machine: one thread by default, and ``--threads 2`` is refused."""
    import torch

    monkeypatch.setattr(cli.os, "cpu_count", lambda: 64)
    monkeypatch.setattr(cli.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    _stop_before_loading(monkeypatch)
    assert cli.main(["generate", "x", "-o", str(tmp_path / "o.png")]) == 2
    assert torch.get_num_threads() == 1
    capsys.readouterr()
    assert cli.main(["generate", "x", "--threads", "2", "-o", str(tmp_path / "o.png")]) == 2
    assert "--threads must be an integer in [1, 1]" in capsys.readouterr().err
