"""
The docs cannot drift from the results: every table of learning results in README.md and docs/*.md is a block
between ``<!-- results:<folder> -->`` and ``<!-- /results -->`` generated from that folder's ``results.json``, and every
table of zoo presets one between ``<!-- presets ... -->`` and ``<!-- /presets -->`` generated from the YAML files under
``sb3_rssm/zoo/hyperparams/`` (``python examples/benchmark.py --write-docs``). These tests regenerate each block with
the same function, in-process, and fail when one differs; they also show that a changed figure, a changed result or a
changed YAML value is caught.
"""

from __future__ import annotations

import glob
import json
import os
import re
import runpy
import shutil
from typing import Any

import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("yaml")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "examples", "benchmark.py")


@pytest.fixture(scope="module")
def bench() -> dict[str, Any]:
    """examples/benchmark.py's functions (run as a module, not as the script)."""
    return runpy.run_path(SCRIPT)


def _read(path: str) -> str:
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return f.read()


def test_every_marked_block_matches_its_source(bench):
    stale = bench["refresh_docs"](ROOT, write=False)
    assert not stale, (
        "these blocks differ from their results.json / zoo YAML; run `python examples/benchmark.py --write-docs`:\n"
        + "\n".join(stale)
    )


def test_the_docs_have_their_generated_tables(bench):
    blocks = {
        (os.path.relpath(path, ROOT), block.kind, block.arg)
        for path in bench["doc_paths"](ROOT)
        for block in bench["doc_blocks"](_read(os.path.relpath(path, ROOT)))
    }
    expected = {
        ("README.md", "results", "docs/benchmarks/pendulum_all"),
        ("README.md", "results", "docs/benchmarks/dmc_cartpole_pixels"),
        ("README.md", "presets", None),
        ("docs/benchmarks.md", "results", "docs/benchmarks/pendulum"),
        ("docs/benchmarks.md", "results", "docs/benchmarks/pendulum_planet"),
        ("docs/benchmarks.md", "results", "docs/benchmarks/dreamer_v3"),
        ("docs/benchmarks.md", "results", "docs/benchmarks/dmc_cartpole_pixels"),
        ("docs/zoo.md", "presets", None),
        ("docs/algorithms.md", "presets", "dreamer_v3"),
    }
    assert expected <= blocks, f"missing generated blocks: {sorted(expected - blocks, key=str)}"
    # docs/zoo.md's table lists every entry of every shipped YAML file
    zoo = next(b for b in bench["doc_blocks"](_read("docs/zoo.md")) if b.kind == "presets")
    assert zoo.arg is None and not zoo.options


def test_every_kept_run_is_in_a_generated_table(bench):
    # a results.json in docs/benchmarks/ whose runs no block shows is a result the docs do not report
    shown = set()
    for path in bench["doc_paths"](ROOT):
        for block in bench["doc_blocks"](_read(os.path.relpath(path, ROOT))):
            if block.kind == "results":
                with open(os.path.join(ROOT, block.arg, "results.json")) as f:
                    shown |= {(r["algo"], r["env"], r["seed"], r["final_return"], r["wall_s"]) for r in json.load(f)}
    missing = []
    for path in sorted(glob.glob(os.path.join(ROOT, "docs", "benchmarks", "*", "results.json"))):
        with open(path) as f:
            runs = json.load(f)
        missing += [
            f"{os.path.relpath(path, ROOT)}: {r['algo']} {r['env']} seed {r['seed']}"
            for r in runs
            if (r["algo"], r["env"], r["seed"], r["final_return"], r["wall_s"]) not in shown
        ]
    assert not missing, "runs that no <!-- results:... --> block shows:\n" + "\n".join(missing)


def _first_block(bench, text: str, kind: str):
    return next(block for block in bench["doc_blocks"](text) if block.kind == kind)


def _edit_block(text: str, block: Any, old: str, new: str) -> str:
    """``text`` with the first ``old`` inside ``block``'s body replaced by ``new``."""
    body = text[block.body_start : block.body_end]
    assert old in body
    return text[: block.body_start] + body.replace(old, new, 1) + text[block.body_end :]


def test_an_edited_figure_in_a_results_block_is_caught(bench):
    text = _read("README.md")
    block = _first_block(bench, text, "results")
    edited = _edit_block(text, block, "-169.0", "-159.0")  # DreamerV1's median on Pendulum-v1
    _, stale = bench["refresh_doc_text"](text, "README.md")
    assert stale == []
    new_text, stale = bench["refresh_doc_text"](edited, "README.md")
    assert stale == [f"README.md:{block.line} {block.marker}"]
    assert new_text == text  # --write-docs puts the figure back


def test_an_edited_value_in_a_presets_block_is_caught(bench):
    text = _read("docs/algorithms.md")
    block = _first_block(bench, text, "presets")
    edited = _edit_block(text, block, "| 192 |", "| 128 |")  # a replay ratio
    new_text, stale = bench["refresh_doc_text"](edited, "docs/algorithms.md")
    assert stale == [f"docs/algorithms.md:{block.line} {block.marker}"]
    assert new_text == text


def test_a_changed_result_is_caught(bench, tmp_path):
    # the same README against a copy of the results in which one run's final return moved by 0.1
    text = _read("README.md")
    folder = "docs/benchmarks/dmc_cartpole_pixels"
    os.makedirs(tmp_path / folder)
    with open(os.path.join(ROOT, folder, "results.json")) as f:
        runs = json.load(f)
    runs[0]["final_return"] += 0.1
    (tmp_path / folder / "results.json").write_text(json.dumps(runs))
    for unchanged in ("docs/benchmarks/pendulum_all", "docs/benchmarks/dmc_cartpole_pixels_entropy"):  # the README's others
        shutil.copytree(os.path.join(ROOT, unchanged), tmp_path / unchanged)
    _, stale = bench["refresh_doc_text"](text, "README.md", root=str(tmp_path))
    assert [entry.split(" ", 1)[1] for entry in stale] == [f"<!-- results:{folder} per-seed -->"]


def test_a_changed_yaml_value_is_caught(bench, tmp_path):
    # DreamerV3's Pendulum-v1 entry updating every 8 steps instead of 4: its train_freq and replay ratio change
    hyperparams = tmp_path / "hyperparams"
    shutil.copytree(os.path.join(ROOT, "sb3_rssm", "zoo", "hyperparams"), hyperparams)
    path = hyperparams / "dreamer_v3.yml"
    yaml_text = path.read_text()
    entry = yaml_text.index("\nPendulum-v1:")
    assert "  train_freq: 4\n" in yaml_text[entry:]
    path.write_text(yaml_text[:entry] + yaml_text[entry:].replace("  train_freq: 4\n", "  train_freq: 8\n", 1))
    rows = {(r["algo"], r["env"]): r for r in bench["preset_rows"](str(hyperparams))}
    assert rows["dreamer_v3", "Pendulum-v1"]["train_freq"] == 8 and rows["dreamer_v3", "Pendulum-v1"]["replay_ratio"] == 96
    stale = bench["refresh_docs"](ROOT, write=False, hyperparams_dir=str(hyperparams))
    # every presets block that shows DreamerV3's Pendulum-v1 entry, and none of the results blocks
    assert {entry.split(":", 1)[0] for entry in stale} == {
        "README.md",
        "docs/algorithms.md",
        "docs/benchmarks.md",
        "docs/zoo.md",
    }
    assert all("<!-- presets" in entry for entry in stale)


def test_presets_table_values(bench):
    rows = {(r["algo"], r["file"], r["env"]): r for r in bench["preset_rows"]()}
    v3 = rows["dreamer_v3", "dreamer_v3.yml", "CartPole-v1"]
    assert (v3["batch_size"], v3["sequence_length"], v3["train_freq"], v3["gradient_steps"]) == (16, 16, 4, 3)
    assert v3["replay_ratio"] == 192 and v3["model"] == "`size1m`"
    # a value the YAML does not set is the constructor's default: DreamerV1's paper batch on the pixel tasks
    pixels = rows["dreamer_v1", "dreamer_v1.yml", "sb3_rssm/dmc-cartpole-swingup-pixels-v0"]
    assert (pixels["batch_size"], pixels["sequence_length"], pixels["replay_ratio"]) == (50, 50, 2000)
    assert pixels["model"] == "RSSM 30/200/200, conv depth 32"
    assert rows["planet", "planet.yml", "Pendulum-v1"]["model"].endswith("CEM 20 / 150 / 15 / 4")
    cpu = rows["dreamer_v3", os.path.join("cpu", "dreamer_v3.yml"), "sb3_rssm/dmc-cartpole-swingup-pixels-v0"]
    assert cpu["replay_ratio"] == pytest.approx(16 * 16 / 4)


def test_results_table_names_commands_machine_and_date(bench, tmp_path):
    def record(seed: int, final: float, **extra: Any) -> dict:
        return dict(
            algo="dreamer_v1",
            env="Pendulum-v1",
            seed=seed,
            timesteps=40,
            action_repeat=1,
            final_return=final,
            eval_episodes=1,
            wall_s=10.0 + seed,
            curve_steps=[20, 40],
            curve_returns=[final - 100, final],
            **extra,
        )

    runs = [
        record(0, -150.0),
        record(
            1, -170.0, command="python examples/benchmark.py --seeds 1 --out x", machine="CPU X, 2 CPUs", date="2026-12-05"
        ),
    ]
    folder = tmp_path / "x"
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps(runs))
    text = "intro\n<!-- results:x -->\n<!-- /results -->\n<!-- results:x per-seed curves -->\n<!-- /results -->\nend\n"
    new_text, stale = bench["refresh_doc_text"](text, "t.md", root=str(tmp_path))
    assert len(stale) == 2 and new_text.startswith("intro\n") and new_text.endswith("<!-- /results -->\nend\n")
    assert (
        "| DreamerV1 | Pendulum-v1 | 40 | 0, 1 | -150.0, -170.0 | -160.0 ± 10.0 | **-160.0** | 10 s | [1], [2] |" in new_text
    )
    assert "1. not recorded" in new_text and "(machine/date: not recorded)" in new_text
    assert "2. `python examples/benchmark.py --seeds 1 --out x` (CPU X, 2 CPUs, 2026-12-05)" in new_text
    assert "| DreamerV1 | Pendulum-v1 | 1 | 40 | -170.0 | -270.0, -170.0 | 11 s | [2] |" in new_text
    assert bench["refresh_doc_text"](new_text, "t.md", root=str(tmp_path))[1] == []


def test_malformed_blocks_are_refused(bench):
    with pytest.raises(ValueError, match="without its end marker"):
        bench["doc_blocks"]("<!-- results:docs/benchmarks/pendulum -->\n| a |\n")
    with pytest.raises(ValueError, match="unknown option 'median'"):
        bench["doc_blocks"]("<!-- results:docs/benchmarks/pendulum median -->\n<!-- /results -->\n")


def test_check_docs_exits_1_listing_the_stale_blocks(bench, tmp_path, capsys, monkeypatch):
    # a copy of the repository's docs and results (nothing else), with one figure of the README edited
    keep = shutil.ignore_patterns("*.png", "*.zip", "*.npz", "*.csv", "table.md", "harness")
    shutil.copytree(os.path.join(ROOT, "docs"), tmp_path / "docs", ignore=keep)
    shutil.copy(os.path.join(ROOT, "README.md"), tmp_path / "README.md")
    readme = tmp_path / "README.md"
    text = readme.read_text()
    block = _first_block(bench, text, "results")
    readme.write_text(_edit_block(text, block, "-169.0", "-159.0"))
    monkeypatch.setattr("sys.argv", [SCRIPT, "--check-docs", "--root", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_info:
        bench["main"]()
    assert exit_info.value.code == 1
    assert f"README.md:{block.line} {block.marker}: differs from its source" in capsys.readouterr().out
    monkeypatch.setattr("sys.argv", [SCRIPT, "--write-docs", "--root", str(tmp_path)])
    bench["main"]()
    assert readme.read_text() == text
    monkeypatch.setattr("sys.argv", [SCRIPT, "--check-docs", "--root", str(tmp_path)])
    bench["main"]()
    assert "every marked block matches its source" in capsys.readouterr().out


def test_machine_description_names_the_cpu_and_torch(bench):
    import torch

    description = bench["machine_description"]()
    assert re.search(r", \d+ CPUs", description) and description.endswith(f"torch {torch.__version__}")
