"""CLI errors as a user meets them: one clear line on stderr and exit code 2, no traceback unless --debug; the price
options of `data import` (--prices several files, --on-missing-price)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from routecraft.cli import app

LONG = ["--format", "long", "--input-tokens-col", "input_tokens", "--output-tokens-col", "output_tokens"]


def rc(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "routecraft.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


@pytest.fixture()
def log(tmp_path: Path) -> dict[str, Path]:
    """A long-format log of two models, a price file with only one of them (a.yaml), one with both (b.yaml)."""
    csv = tmp_path / "log.csv"
    csv.write_text("text,model,score,input_tokens,output_tokens\n"
                   "What is 2+2?,gpt-4o-2024-08-06,1,1000,500\n"
                   "What is 2+2?,my-private-model,0,1000,500\n"
                   "What is 3+3?,gpt-4o-2024-08-06,1,1000,500\n"
                   "What is 3+3?,my-private-model,1,1000,500\n")
    a = tmp_path / "a.yaml"
    a.write_text("models:\n  gpt-4o-2024-08-06: {input_per_1m: 2.5, output_per_1m: 10, "
                 "source: 'https://openai.com/api/pricing', date: 2024-08}\n")
    b = tmp_path / "b.yaml"
    b.write_text("models:\n  my-private-model: {input_per_1m: 1, output_per_1m: 2, source: internal, date: 2026-11}\n"
                 "  gpt-4o-2024-08-06: {input_per_1m: 5, output_per_1m: 20, source: renegotiated, date: 2026-11}\n")
    return {"csv": csv, "a": a, "b": b, "dir": tmp_path}


def test_missing_price_is_one_line_naming_model_and_file(log):
    r = rc("data", "import", str(log["csv"]), "--out", str(log["dir"] / "o"), *LONG, "--prices", str(log["a"]))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr + r.stdout
    err = lines(r.stderr)
    assert len(err) == 1, r.stderr
    assert err[0].startswith("error: no price for model(s) 'my-private-model'")
    assert str(log["a"]) in err[0] and "--on-missing-price zero" in err[0]
    assert not (log["dir"] / "o").exists()


def test_debug_shows_the_traceback(log):
    r = rc("--debug", "data", "import", str(log["csv"]), "--out", str(log["dir"] / "o"), *LONG,
           "--prices", str(log["a"]))
    assert r.returncode == 2
    assert "Traceback (most recent call last)" in r.stderr and "MissingPriceError" in r.stderr
    assert lines(r.stderr)[-1].startswith("error: no price for model(s) 'my-private-model'")


@pytest.mark.parametrize("how", ["comma", "repeated"])
def test_several_price_files_merge_later_wins(log, how):
    out = log["dir"] / f"o-{how}"
    prices = (["--prices", f"{log['a']},{log['b']}"] if how == "comma"
              else ["--prices", str(log["a"]), "--prices", str(log["b"])])
    r = rc("data", "import", str(log["csv"]), "--out", str(out), *LONG, *prices)
    assert r.returncode == 0, r.stderr
    meta = json.loads((out / "meta.json").read_text())
    assert meta["prices"]["gpt-4o-2024-08-06"]["source"] == "renegotiated"  # b.yaml overrides a.yaml
    assert meta["prices"]["my-private-model"]["input_per_1m"] == 1.0       # only in b.yaml
    assert "unpriced" not in meta
    o = pd.read_parquet(out / "outcomes.parquet")
    gpt = o[o["model"] == "gpt-4o-2024-08-06"]["cost_usd"]
    assert gpt.round(9).tolist() == [round((1000 * 5 + 500 * 20) / 1e6, 9)] * 2


def test_on_missing_price_zero_imports_at_cost_zero_and_says_so(log):
    out = log["dir"] / "o"
    r = rc("data", "import", str(log["csv"]), "--out", str(out), *LONG, "--prices", str(log["a"]),
           "--on-missing-price", "zero")
    assert r.returncode == 0, r.stderr
    assert "my-private-model" in r.stderr and "cost 0" in r.stderr
    meta = json.loads((out / "meta.json").read_text())
    assert meta["unpriced"]["models"] == ["my-private-model"] and meta["unpriced"]["cost"] == 0.0
    o = pd.read_parquet(out / "outcomes.parquet")
    assert (o[o["model"] == "my-private-model"]["cost_usd"] == 0).all()
    assert (o[o["model"] == "gpt-4o-2024-08-06"]["cost_usd"] > 0).all()


def test_builtin_import_takes_the_price_options(tmp_path):
    runner = CliRunner()
    empty = tmp_path / "empty.yaml"
    empty.write_text("models: {}\n")
    r = runner.invoke(app, ["data", "import", "routellm-mtbench", "--out", str(tmp_path / "o"),
                            "--prices", str(empty)])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert len(lines(r.stderr)) == 1 and "gpt-4-1106-preview" in r.stderr and str(empty) in r.stderr
    r = runner.invoke(app, ["data", "import", "routellm-mtbench", "--out", str(tmp_path / "o"),
                            "--prices", f"builtin,{empty}", "--on-missing-price", "error"])
    assert r.exit_code == 0, r.output  # the packaged table, overridden by nothing
    r = runner.invoke(app, ["data", "import", "routellm-mtbench", "--out", str(tmp_path / "o"),
                            "--on-missing-price", "maybe"])
    assert r.exit_code == 2 and "--on-missing-price must be 'error' or 'zero'" in r.stderr


def test_bad_file_bad_spec_missing_artifact(tmp_path):
    runner = CliRunner()
    cases = [
        (["data", "import", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o"), *LONG, "--prices", "builtin"],
         "nope.csv"),
        (["train", "--router", "no-such-router", "--data", "routellm-mtbench", "--out", str(tmp_path / "r")],
         "unknown router 'no-such-router'"),
        (["bench", "--data", "routellm-mtbench", "--routers", "knn:k", "--seeds", "0"], "is not key=value"),
        (["route", "--router", str(tmp_path / "no-artifact"), "a question"], "is not a router artifact"),
        (["bench", "--data", str(tmp_path / "no-such-folder")], "no-such-folder"),
    ]
    for args, needle in cases:
        r = runner.invoke(app, args)
        assert r.exit_code == 2, (args, r.output)
        assert "Traceback" not in r.output, args
        err = lines(r.stderr)
        assert err and err[-1].startswith("error: ") and needle in err[-1], (args, r.stderr)


def test_any_escaping_exception_is_one_line_unless_debug(monkeypatch):
    """An exception no command handles itself (here: one raised inside `data list`) reaches the top-level group."""
    import routecraft.data.resolve as resolve

    def boom():
        raise OSError("disk on fire")

    monkeypatch.setattr(resolve, "builtin_names", boom)
    runner = CliRunner()
    r = runner.invoke(app, ["data", "list"])
    assert r.exit_code == 2
    assert lines(r.stderr) == ["error: disk on fire (--debug shows the traceback)"]
    r = runner.invoke(app, ["--debug", "data", "list"])
    assert r.exit_code == 2
    assert "Traceback (most recent call last)" in r.stderr and "OSError: disk on fire" in r.stderr
    assert lines(r.stderr)[-1] == "error: disk on fire"


def test_route_encoder_must_match_the_artifact(tmp_path):
    runner = CliRunner()
    art = tmp_path / "lin"
    r = runner.invoke(app, ["train", "--router", "linear", "--data", "routellm-mtbench", "--out", str(art)])
    assert r.exit_code == 0, r.output
    assert json.loads((art / "router.json").read_text())["encoder"] == "all-MiniLM-L6-v2"
    r = runner.invoke(app, ["route", "--router", str(art), "--encoder", "static", "What is 2+2?"])
    assert r.exit_code == 2 and "trained on all-MiniLM-L6-v2 features" in r.stderr
