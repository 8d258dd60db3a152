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


def start_gateway(d: Path, cfg: dict, env: dict | None = None):
    (d / "gw.yaml").write_text(yaml.safe_dump(cfg))
    ready = d / "ready.json"
    ready.unlink(missing_ok=True)
    env = {**os.environ, "ROUTECRAFT_API_KEYS": "", **(env or {})}
    proc = subprocess.Popen([sys.executable, "-m", "routecraft.serve", "serve", "--config", str(d / "gw.yaml"),
                             "--ready-file", str(ready)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 180
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            out = proc.stdout.read().decode() if proc.poll() is not None else "(still running)"
            proc.kill()
            pytest.fail(f"gateway did not start: {out}")
        time.sleep(0.1)
    info = json.loads(ready.read_text())
    return proc, f"http://127.0.0.1:{info['port']}"


def stop_gateway(proc) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
