"""The README's bring-your-own-model example runs as written and gives a project the explorer opens."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from seqvis.projects import open_project
from seqvis.server import create_app

README = Path(__file__).resolve().parents[1] / "README.md"


def example_blocks() -> tuple[str, str]:
    """The `mylm.py` module and the shell commands that follow it in the README."""
    section = README.read_text().split("## Bring your own model", 1)[1].split("\n## ", 1)[0]
    python, shell = re.findall(r"```(?:python|sh)\n(.*?)```", section, re.S)[:2]
    assert python.startswith("# mylm.py\n")
    return python, shell


def test_bring_your_own_model_example(tmp_path):
    module, commands = example_blocks()
    (tmp_path / "mylm.py").write_text(module)
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", commands], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    project = open_project(tmp_path / "data" / "mylm")
    assert list(project.layers) == ["rnn.l0.h", "rnn.l0.c", "rnn.l1.h", "rnn.l1.c"]
    assert "".join(project.words(0, 9)) == "# mylm.py"
    client = create_app({"DATA_DIR": str(tmp_path / "data")}).test_client()
    context = client.get("/api/explorer/mylm/context?layer=rnn.l1.c&start=0&stop=20").get_json()
    assert len(context["states"]) == 64 and len(context["states"][0]) == 20
