"""Starting and stopping `routecraft serve` as a subprocess in tests (the attack, replica and consultation tests), and
the SmolLM2 prices and prompt they share."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

PRICE = {"price_in_per_m": 0.00294, "price_out_per_m": 0.0218}
STORY = [{"role": "user", "content": "Write a long story about a dragon who learns to bake bread."}]


def launch_gateway(d: Path, cfg: dict, env: dict | None = None, timeout_s: float = 180.0):
    """`routecraft serve --config d/gw.yaml` as a subprocess, once its ready file is written: (process, ready info:
    host, port, pid, url). Fails the test with the gateway's output when it does not start."""
    (d / "gw.yaml").write_text(yaml.safe_dump(cfg))
    ready = d / "ready.json"
    ready.unlink(missing_ok=True)
    env = {**os.environ, "ROUTECRAFT_API_KEYS": "", **(env or {})}
    proc = subprocess.Popen([sys.executable, "-m", "routecraft.serve", "serve", "--config", str(d / "gw.yaml"),
                             "--ready-file", str(ready)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + timeout_s
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            out = proc.stdout.read().decode() if proc.poll() is not None else "(still running)"
            proc.kill()
            pytest.fail(f"gateway did not start: {out}")
        time.sleep(0.1)
    return proc, json.loads(ready.read_text())


def start_gateway(d: Path, cfg: dict, env: dict | None = None):
    """``launch_gateway``, returning (process, root URL)."""
    proc, info = launch_gateway(d, cfg, env)
    return proc, f"http://127.0.0.1:{info['port']}"


def stop_gateway(proc, grace_s: float = 30.0) -> None:
    """SIGTERM (a graceful drain), then SIGKILL after ``grace_s``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
