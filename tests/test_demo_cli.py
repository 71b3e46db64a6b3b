"""``alexnet-kit demo`` on the command line, and Gradio staying out of the other commands."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "alexnet_kit", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})


def test_classify_does_not_import_gradio(tiny_checkpoint):
    code = (
        "import sys\n"
        "from alexnet_kit.cli import main\n"
        f"rc = main(['classify', '--model', {str(tiny_checkpoint)!r}, {str(ROOT / 'examples/photos/cat.jpg')!r}])\n"
        "assert rc == 0, rc\n"
        "heavy = sorted(m for m in ('gradio', 'gradio_client', 'fastapi', 'alexnet_kit.apps') if m in sys.modules)\n"
        "print('IMPORTED', heavy)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "IMPORTED []" in r.stdout


def test_demo_help_lists_the_options():
    r = run_cli("demo", "--help")
    assert r.returncode == 0
    for opt in ("--model", "--index", "--host", "--port", "--max-upload-mb"):
        assert opt in r.stdout
    assert "--share" not in r.stdout
    assert "127.0.0.1" in r.stdout


def test_demo_missing_model_is_one_line(tmp_path):
    r = run_cli("demo", "--model", str(tmp_path / "nope.safetensors"))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"alexnet-kit: error: {tmp_path / 'nope.safetensors'}: model file not found"]
    assert "Traceback" not in r.stderr


def test_demo_wrong_model_file_is_one_line(tmp_path):
    bad = tmp_path / "notes.safetensors"
    bad.write_text("not a checkpoint")
    r = run_cli("demo", "--model", str(bad))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"alexnet-kit: error: {bad}:"), r.stderr


def test_demo_missing_index_and_bad_limits(tiny_checkpoint, tmp_path):
    r = run_cli("demo", "--model", str(tiny_checkpoint), "--index", str(tmp_path / "no.index"))
    assert r.returncode == 2 and "index not found" in r.stderr
    r = run_cli("demo", "--model", str(tiny_checkpoint), "--max-upload-mb", "0")
    assert r.returncode == 2 and "--max-upload-mb" in r.stderr


@pytest.mark.slow
def test_demo_serves_on_localhost(tiny_checkpoint):
    """The real command: starts, answers on 127.0.0.1, says the model is untrained, stops on SIGTERM."""
    import socket
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "alexnet_kit", "demo", "--model", str(tiny_checkpoint), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                            env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    try:
        deadline = time.monotonic() + 90
        config = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                config = httpx.get(f"http://127.0.0.1:{port}/config", timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.3)
        assert config is not None and config.status_code == 200, proc.stdout.read() if proc.poll() is not None else "no answer"
        assert "Untrained model" in config.text
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert "untrained" in out
