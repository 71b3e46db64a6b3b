"""``alexnet-kit demo`` on the command line, and Gradio staying out of the other commands."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from helpers import ROOT, free_port


@pytest.mark.slow  # over 2.5 s on 2 cores: out of make test-fast
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


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """The real entry point, in-process: (exit status, stdout, stderr)."""
    from alexnet_kit.cli import main

    try:
        rc = main(list(args))
    except SystemExit as e:  # argparse: --help, usage errors
        rc = e.code
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_demo_help_lists_the_options(capsys):
    rc, out, _ = cli(capsys, "demo", "--help")
    assert rc == 0
    for opt in ("--model", "--index", "--host", "--port", "--max-upload-mb"):
        assert opt in out
    assert "--share" not in out
    assert "127.0.0.1" in out


def test_demo_missing_model_is_one_line(capsys, tmp_path):
    rc, _, err = cli(capsys, "demo", "--model", str(tmp_path / "nope.safetensors"))
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"alexnet-kit: error: {tmp_path / 'nope.safetensors'}: model file not found")


def test_demo_wrong_model_file_is_one_line(capsys, tmp_path):
    bad = tmp_path / "notes.safetensors"
    bad.write_text("not a checkpoint")
    rc, _, err = cli(capsys, "demo", "--model", str(bad))
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"alexnet-kit: error: {bad}:"), err


def test_demo_missing_index_and_bad_limits(capsys, tiny_checkpoint, tmp_path):
    rc, _, err = cli(capsys, "demo", "--model", str(tiny_checkpoint), "--index", str(tmp_path / "no.index"))
    assert rc == 2 and "no.index: no such index folder (--index)" in err
    rc, _, err = cli(capsys, "demo", "--model", str(tiny_checkpoint), "--max-upload-mb", "0")
    assert rc == 2 and "--max-upload-mb" in err


def test_demo_index_of_another_model_is_one_line(capsys, tiny_checkpoint, tmp_path, tiny_config):
    from alexnet_kit.search import SimilarityIndex
    from helpers import EXAMPLES, make_checkpoint

    other = make_checkpoint(tmp_path / "other.safetensors", tiny_config, seed=3)
    SimilarityIndex.build([EXAMPLES / "cat.jpg", EXAMPLES / "rocket.jpg"], tmp_path / "i.index", model=other).close()
    rc, _, err = cli(capsys, "demo", "--model", str(tiny_checkpoint), "--index", str(tmp_path / "i.index"))
    assert rc == 2
    # a first run may also say, before the error, that it measures the engines once for this model
    lines = [l for l in err.strip().splitlines() if not l.startswith("alexnet-kit: measuring")]
    assert len(lines) == 1 and "features are not comparable" in lines[0], err


def die_with_parent() -> None:
    """Linux: the server gets SIGTERM if pytest itself is killed, so it never outlives the test run."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@pytest.mark.slow
def test_demo_serves_on_localhost(tiny_checkpoint):
    """The real command: starts, answers on 127.0.0.1, says the model is untrained, stops cleanly on SIGTERM."""
    import select
    import time

    import httpx

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "alexnet_kit", "demo", "--model", str(tiny_checkpoint), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT,
                            env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}, preexec_fn=die_with_parent)
    try:
        # wait for the command to say it is serving (it prints after the server is up)
        deadline, seen = time.monotonic() + 120, ""
        while "serving" not in seen and time.monotonic() < deadline and proc.poll() is None:
            ready, _, _ = select.select([proc.stdout], [], [], 1.0)
            if ready:  # raw reads: a buffered readline could sit on the line we wait for
                seen += os.read(proc.stdout.fileno(), 65536).decode()
        assert f"serving http://127.0.0.1:{port}/" in seen, seen
        config = httpx.get(f"http://127.0.0.1:{port}/config", timeout=10)
        assert config.status_code == 200 and "Untrained model" in config.text
    finally:
        # SIGTERM, not SIGINT: a test run started in the background (`pytest &`)
        # hands its children SIGINT ignored, and Python then never sees Ctrl-C.
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    out = seen + out.decode()
    assert "untrained" in out
    assert "stopped" in out and "Traceback" not in out
    assert proc.returncode == 0


def test_demo_port_in_use_is_one_line(capsys, tiny_checkpoint):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        rc, _, err = cli(capsys, "demo", "--model", str(tiny_checkpoint), "--port", str(port))
    assert rc == 2
    assert f"alexnet-kit: error: cannot serve on 127.0.0.1:{port}" in err
    assert "Traceback" not in err
