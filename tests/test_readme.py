"""The README's Python example runs as written, on the embedded model."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README shows Python code"
    for block in blocks:
        namespace: dict = {}
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102 - our own README
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 20  # one line per step of the 20-step schedule
    assert namespace["gen"].images[0].size == (64, 64)
    assert "Sampler: DPM++ 2M" in namespace["gen"].infotext and "Schedule type: Karras" in namespace["gen"].infotext
    assert list(namespace["tokens"].ids[0, :4]) == [49406, 320, 736, 7117]  # <|startoftext|> a red circle
