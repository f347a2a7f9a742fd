"""Chapter 5's paper-scale configuration (``BILEVEL_PAPER_SCALE=1``) runs end to end.

The chapter's code cells are executed in order with the switch on, on small synthetic
stand-ins for MNIST and CIFAR-10 (random images, all of MNIST's width so that the compiled
sweeps are shared and the test stays short) and with the run lengths cut down after the
settings cells, so the paper-scale code path (full-batch warm start, the CIFAR-10 column,
five seeds, the full validation set in the augmentation runs) cannot rot without a test
failing. The settings are checked to be the paper-scale ones
before they are shortened. Nothing here checks the chapter's numbers (nbval does that at
default size).
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import numpy as np
import pytest

from bilevel_lib.tasks import image_distill as idl

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = ROOT / "book" / "05_high_dimension.ipynb"

# run lengths substituted after the settings cells (the names the chapter defines)
SHORT = dict(WARM_STEPS=16, WARM1_STEPS=16, COLD_STEPS=15, COLD_INNER=3,
             TUNE=dict(seeds=1, warm=10, cold=10), REFERENCE=dict(steps=5, lr=1e-2),
             RETRAIN=dict(steps=5, lr=0.5))
SHORT_AUG = dict(AUG_STEPS={"warm": dict(outer_steps=10, inner_steps=1),
                            "cold": dict(outer_steps=10, inner_steps=2)},
                 AUG_RETRAIN=dict(draws=2, steps=5, lr=0.5))


def fake_prepare(name, **_):
    """Random [0, 1] images (784 pixels), labels i mod 10."""
    dim = 784
    rng = np.random.default_rng(len(name))

    def split(n):
        return (rng.uniform(size=(n, dim)).astype(np.float32),
                (np.arange(n) % 10).astype(np.int32))

    return {"original": split(60), "validation": split(30), "test": split(30)}


def test_chapter_5_runs_at_paper_scale_on_tiny_data(monkeypatch):
    monkeypatch.setenv("BILEVEL_PAPER_SCALE", "1")
    monkeypatch.setattr(idl, "prepare", fake_prepare)
    import matplotlib.pyplot as plt
    monkeypatch.setattr(plt, "show", lambda *a, **k: plt.close("all"))
    cells = [("".join(c["source"]), c["metadata"].get("tags", []))
             for c in json.loads(CHAPTER.read_text())["cells"] if c["cell_type"] == "code"]
    namespace = {"__name__": "chapter5"}
    seen = set()
    for source, _ in cells:
        exec(compile(source, str(CHAPTER), "exec"), namespace)  # noqa: S102
        if "SEEDS" in namespace and "settings" not in seen:
            seen.add("settings")
            assert namespace["PAPER_SCALE"] is True
            assert namespace["SEEDS"] == 5 and namespace["BATCH"] is None
            assert namespace["WARM1_STEPS"] == namespace["WARM_STEPS"] == 40_000
            assert "cifar10" in namespace["DATASETS"]
            namespace.update(SHORT, DATASETS=["mnist", "cifar10"])
        if "AUG" in namespace and "aug" not in seen:
            seen.add("aug")
            assert namespace["AUG"]["batch_size"] is None
            namespace.update(SHORT_AUG)
    assert seen == {"settings", "aug"}
    runs, aug = namespace["runs"], namespace["aug"]
    assert ("cifar10", 10, "warm") in runs and ("cifar10", "retrained") in aug
    final = np.asarray(runs["cifar10", 10, "warm"][2]["accuracy"]["model"]["original"])
    assert final.shape == (5, 8) and np.all((0 <= final) & (final <= 1))
    plt.close("all")


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-q"])
