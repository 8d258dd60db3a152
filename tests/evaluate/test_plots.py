"""The trade-off plot is written, is a real PNG with drawn content, and copes with many singles and odd inputs."""
import subprocess
import sys

import numpy as np
import pytest

from routecraft.evaluate import plots as P

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _image(path):
    import matplotlib.image as mpimg

    return mpimg.imread(str(path))


def _curves(rng, n_models=42):
    price = np.geomspace(1e-5, 3e-2, n_models) * rng.uniform(0.5, 2, n_models)
    acc = np.clip(0.5 + 0.45 * np.log(price / 1e-5) / np.log(3e3) + rng.normal(0, 0.05, n_models), 0, 1)
    singles = {f"provider/model-{j:02d}-instruct": (price[j], acc[j]) for j in range(n_models)}
    c = np.geomspace(1e-5, 1e-2, 25)
    curves = {"knn": (c, 0.55 + 0.12 * np.log10(c / 1e-5)),
              "mlp": (c[::-1], 0.5 + 0.135 * np.log10(c[::-1] / 1e-5))}   # unsorted input on purpose
    oracle = (c, np.minimum(0.99, 0.7 + 0.1 * np.log10(c / 1e-5)))
    return curves, singles, oracle


def test_plot_tradeoff_writes_a_nontrivial_png(tmp_path):
    curves, singles, oracle = _curves(np.random.default_rng(0))
    out = P.plot_tradeoff(curves, singles, oracle, tmp_path / "sub" / "tradeoff.png", "42 models")
    assert out.exists() and out.read_bytes()[:8] == PNG_MAGIC
    assert out.stat().st_size > 30_000
    img = _image(out)
    assert img.shape[0] >= 600 and img.shape[1] >= 900
    # a blank figure would be (almost) one colour; lines, points and text give many distinct colours
    colours = np.unique((img[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 200


def test_only_a_few_singles_are_labelled():
    rng = np.random.default_rng(0)
    _, singles, _ = _curves(rng)
    labels = P.choose_labels(singles, max_labels=8)
    assert len(labels) == 8
    best = max(singles, key=lambda k: singles[k][1])
    cheap = min(singles, key=lambda k: singles[k][0])
    assert labels[0] == best and cheap in labels
    assert P.choose_labels({"a": (1.0, 0.5)}) == ["a"]
    assert P.choose_labels({}) == []


def test_plot_linear_axes_scalar_oracle_zero_cost_and_no_singles(tmp_path):
    curves = {"r": ([0.0, 1e-4, 2e-4], [0.4, 0.6, 0.7])}      # a zero cost point with a log axis -> symlog
    out = P.plot_tradeoff(curves, None, (2e-4, 0.9), tmp_path / "a.png", "t", log_x=True)
    assert out.read_bytes()[:8] == PNG_MAGIC
    out = P.plot_tradeoff(curves, {"m": (1e-4, 0.5)}, None, tmp_path / "b.png", "t", log_x=False)
    assert out.stat().st_size > 10_000


def test_plot_rejects_bad_curves(tmp_path):
    with pytest.raises(ValueError, match="r: cost has 2 points but score has 1"):
        P.plot_tradeoff({"r": ([1, 2], [0.5])}, None, None, tmp_path / "x.png", "t")
    with pytest.raises(ValueError, match="no finite"):
        P.plot_tradeoff({"r": ([np.nan], [0.5])}, None, None, tmp_path / "x.png", "t")
    assert not (tmp_path / "x.png").exists()


def test_band_plot(tmp_path):
    rng = np.random.default_rng(1)
    curves, singles, oracle = _curves(rng)
    seeds = {k: [(c * rng.uniform(0.9, 1.1), s + rng.normal(0, 0.01, s.size)) for _ in range(3)]
             for k, (c, s) in curves.items()}
    out = P.plot_tradeoff_bands(seeds, singles, oracle, tmp_path / "bands.png", "bands")
    assert out.read_bytes()[:8] == PNG_MAGIC and out.stat().st_size > 30_000
    with pytest.raises(ValueError, match="no seed curves"):
        P.plot_tradeoff_bands({"r": []}, None, None, tmp_path / "y.png", "t")


def test_import_does_not_touch_matplotlib_backend():
    code = ("import sys; import routecraft.evaluate.plots, routecraft.core.metrics; "
            "print('matplotlib.pyplot' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "False"
