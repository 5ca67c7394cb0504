"""The command line: generate writes a PNG with parameters, info prints them, bad input writes nothing."""

from __future__ import annotations

import pytest

from sdkit.cli import main


def test_generate_then_info(tiny_sd1_folder, tmp_path, capsys):
    out = tmp_path / "out.png"
    rc = main(
        [
            "generate",
            "a red circle",
            "--model",
            str(tiny_sd1_folder),
            "--seed",
            "4376845645",
            "--steps",
            "3",
            "--width",
            "64",
            "--height",
            "64",
            "--sampler",
            "Euler a",
            "-o",
            str(out),
        ]
    )
    assert rc == 0 and out.is_file()
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("a red circle\n") and "Seed: 4376845645" in text and "Steps: 3" in text
    assert "Sampler: Euler a" in text


def test_existing_output_is_not_overwritten(tiny_sd1_folder, tmp_path, capsys):
    out = tmp_path / "out.png"
    out.write_bytes(b"keep me")
    rc = main(
        [
            "generate",
            "x",
            "--model",
            str(tiny_sd1_folder),
            "--steps",
            "2",
            "--width",
            "64",
            "--height",
            "64",
            "-o",
            str(out),
        ]
    )
    assert rc == 2 and out.read_bytes() == b"keep me"
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args,name",
    [
        (["--model", ""], "model"),
        (["--model", "/no/such/folder"], "model"),
        (["--width", "65"], "width"),
        (["--steps", "0"], "steps"),
        (["--cfg", "nan"], "cfg"),
        (["--seed", "-5"], "seed"),
        (["--sampler", "warp drive"], "sampler"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tiny_sd1_folder, tmp_path, capsys, args, name):
    out = tmp_path / "never.png"
    argv = [
        "generate",
        "a cat",
        "--model",
        str(tiny_sd1_folder),
        "--steps",
        "2",
        "--width",
        "64",
        "--height",
        "64",
        "-o",
        str(out),
        *args,
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and name in err.lower()
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_ckpt_needs_opt_in(tmp_path, capsys):
    import torch

    ckpt = tmp_path / "m.ckpt"
    torch.save({"state_dict": {}}, str(ckpt))
    assert main(["generate", "x", "--model", str(ckpt), "-o", str(tmp_path / "o.png")]) == 2
    err = capsys.readouterr().err
    assert "pickle" in err and "allow" in err and not (tmp_path / "o.png").exists()
