"""Structure of the book: the TOC, the chapters' Colab cells and their nbval checkpoints.

These tests read files only, except the last two, which run nbval on a tiny synthetic notebook
to prove that the sanitize file does not hide a changed digit in a checked output.
"""

from __future__ import annotations

import configparser
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())
SANITIZE = ROOT / "tests" / "nbval_sanitize.cfg"
CHECK_TAG = "nbval-check-output"   # nbval's cell tag: the page shows no marker


def _toc_files():
    files = [TOC["root"]]
    for part in TOC.get("parts", []):
        files += [c["file"] for c in part.get("chapters", [])]
    return files


def _resolve(stem):
    for ext in (".ipynb", ".md"):
        if (ROOT / (stem + ext)).exists():
            return ROOT / (stem + ext)
    return None


CHAPTERS = [p for p in map(_resolve, _toc_files()) if p is not None and p.suffix == ".ipynb"]


def _code_cells(path):
    nb = json.loads(path.read_text())
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def _source(cell):
    src = cell["source"]
    return "".join(src) if isinstance(src, list) else src


def _is_checked(cell):
    return CHECK_TAG in cell.get("metadata", {}).get("tags", [])


def _text_outputs(cell):
    out = []
    for o in cell.get("outputs", []):
        if o["output_type"] == "stream":
            out.append("".join(o["text"]) if isinstance(o["text"], list) else o["text"])
        elif "text/plain" in o.get("data", {}):
            t = o["data"]["text/plain"]
            out.append("".join(t) if isinstance(t, list) else t)
    return "".join(out)


def test_every_toc_entry_exists():
    missing = [f for f in _toc_files() if _resolve(f) is None]
    assert not missing, f"_toc.yml names files that do not exist: {missing}"


def test_execution_mode_is_explicit():
    assert CONFIG["execute"]["execute_notebooks"] in {"force", "cache", "off"}
    assert CONFIG["execute"]["execute_notebooks"] == "force", "`make book` must execute chapters"
    assert CONFIG["sphinx"]["config"]["nb_execution_raise_on_error"] is True


def test_there_are_chapters():
    assert len(CHAPTERS) >= 1


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_first_cell_installs_from_the_configured_repository(path):
    first = _source(_code_cells(path)[0])
    url = CONFIG["repository"]["url"]
    assert "google.colab" in first, "the first cell must act only on Colab"
    assert f"git+{url}" in first, f"the Colab cell must install from {url} (_config.yml)"
    installs = re.findall(r"[\"']([^\"']*)[\"']", first)
    assert not [a for a in installs if re.match(r"jax(lib)?\b", a)], (
        "the Colab cell must not install jax/jaxlib (Colab's GPU build is kept)"
    )


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_is_executed_without_errors(path):
    cells = _code_cells(path)
    unrun = [i for i, c in enumerate(cells) if _source(c).strip() and c["execution_count"] is None]
    errors = [i for i, c in enumerate(cells) for o in c.get("outputs", [])
              if o["output_type"] == "error"]
    assert not unrun, f"code cells {unrun} have no stored execution"
    assert not errors, f"code cells {errors} stored an error"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_has_checked_key_numbers(path):
    checked = [c for c in _code_cells(path) if _is_checked(c)]
    assert len(checked) >= 3, f"only {len(checked)} cells carry the tag {CHECK_TAG}"
    rules = configparser.ConfigParser()
    rules.read(SANITIZE)
    for cell in checked:
        text = _text_outputs(cell)
        for section in rules.sections():
            text = re.sub(rules[section]["regex"], rules[section]["replace"], text)
        # Digits or booleans must survive sanitizing, or nbval would compare nothing.
        assert re.search(r"\d|True|False", text), (
            "a checked cell must print numbers or booleans that survive sanitizing; got:\n"
            + text[:300]
        )


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_no_test_markers_in_the_code_a_reader_sees(path):
    marked = [i for i, c in enumerate(_code_cells(path)) if "NBVAL" in _source(c)]
    assert not marked, f"code cells {marked} carry nbval comments; use the cell tag {CHECK_TAG}"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_uses_the_paper_scale_switch_and_reports_the_device(path):
    code = "\n".join(_source(c) for c in _code_cells(path))
    assert "paper_scale()" in code
    assert "device_report()" in code


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_stays_small(path):
    assert path.stat().st_size < 8e6, f"{path.name} is {path.stat().st_size / 1e6:.1f} MB"


def _tiny_notebook(tmp_path, stored):
    cell = {
        "cell_type": "code",
        "execution_count": 1,
        "metadata": {"tags": [CHECK_TAG]},
        "outputs": [{"name": "stdout", "output_type": "stream", "text": [stored]}],
        "source": ["print(f'{2 / 3:.4f} after 12 steps')"],
    }
    nb = {
        "cells": [cell],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                    "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path = tmp_path / "tiny.ipynb"
    path.write_text(json.dumps(nb))
    return path


def _nbval(path):
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
         "--nbval-sanitize-with", str(SANITIZE), str(path)],
        capture_output=True, text=True, cwd=path.parent, timeout=300,
    )


def test_nbval_passes_on_a_correct_stored_output(tmp_path):
    run = _nbval(_tiny_notebook(tmp_path, "0.6667 after 12 steps\n"))
    assert run.returncode == 0, run.stdout + run.stderr


def test_nbval_fails_when_one_digit_of_a_checked_output_changes(tmp_path):
    run = _nbval(_tiny_notebook(tmp_path, "0.6668 after 12 steps\n"))
    assert run.returncode != 0, "nbval did not notice a changed digit:\n" + run.stdout


def _markdown(path):
    nb = json.loads(path.read_text())
    return [_source(c) for c in nb["cells"] if c["cell_type"] == "markdown"]


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_every_figure_is_numbered_captioned_and_collapsed(path):
    """A plotted figure carries myst-nb figure metadata (caption, name, alt text) and hides its
    plotting code; captions are never hand-typed "**Figure ...**" paragraphs."""
    missing, shown = [], []
    for i, cell in enumerate(_code_cells(path)):
        if not any("image/png" in o.get("data", {}) for o in cell.get("outputs", [])):
            continue
        meta = cell.get("metadata", {}).get("mystnb", {})
        figure, image = meta.get("figure", {}), meta.get("image", {})
        if not (figure.get("caption") and figure.get("name") and image.get("alt")):
            missing.append(i)
        if "hide-input" not in cell.get("metadata", {}).get("tags", []):
            shown.append(i)
    hand = [s[:40] for s in _markdown(path) if re.match(r"\s*\*\*Fig(ure)?\b", s)]
    assert not missing, f"code cells {missing} plot without mystnb figure caption/name/alt"
    assert not shown, f"plotting cells {shown} are not tagged hide-input"
    assert not hand, f"hand-typed figure captions: {hand}"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_equation_references_are_not_wrapped_in_parentheses(path):
    # {eq} renders "(4.3)" itself: "({eq}`x`)" would show "((4.3))".
    doubled = [s[:60] for s in _markdown(path) if re.search(r"\(\{eq\}`[^`]*`\)", s)]
    assert not doubled, f"equation references inside parentheses: {doubled}"
