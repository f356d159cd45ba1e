"""`make up FLEET=examples/image/fleet.yaml MODEL=sd35-turbo`: the local fleet serves an image model's
stand-in (tiny SD3 pipeline in moto's S3, the real entrypoint and image server), `invoke --out`
writes the PNG, `status` lists the model, `down` stops it all."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from PIL import Image

from tests.conftest import REPO


def llmfleet(*args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LLMFLEET_"))}
    env["PYTHONPATH"] = str(REPO)
    result = subprocess.run([sys.executable, "-m", "llmfleet.scripts", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def test_local_up_serves_the_image_model_and_invoke_writes_a_png(tmp_path: Path):
    for name in ("fleet.yaml", "fleet.lock.json"):
        shutil.copy(REPO / "examples" / "image" / name, tmp_path / name)
    try:
        up = json.loads(llmfleet("local", "up", "--model", "sd35-turbo", "--json", cwd=tmp_path).stdout)
        assert up["model"] == "sd35-turbo" and up["kind"] == "image" and up["standin"] is True
        assert up["first_answer"].startswith("a 64x64 PNG")
        llmfleet("invoke", "sd35-turbo", "a cat", "--out", "cat.png", "--size", "96x48", cwd=tmp_path)
        assert Image.open(tmp_path / "cat.png").size == (96, 48)
        status = json.loads(llmfleet("status", "--json", cwd=tmp_path).stdout)
        assert "sd35-turbo" in json.dumps(status)
    finally:
        llmfleet("local", "down", cwd=tmp_path)
