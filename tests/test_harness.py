"""
The benchmark plumbing: the performance harness (benchmarks/run.py) reading the TorchRL peer's output and writing
its tables, and PlaNet's plan diagnostics (benchmarks/planet_diagnostics.py).
"""

import json
import pathlib
import sys

import numpy as np

from benchmarks import planet_diagnostics, run
from sb3_rssm import PlaNet
from tests.conftest import tiny_model

ROOT = pathlib.Path(__file__).resolve().parent.parent

# prints what ../shared/bench/peer_torchrl_dreamer.py prints; its update time says which huge-pages setting it saw
FAKE_PEER = """
import os
print("warmup_losses loss_model_kl=1")
for i, (total, model) in enumerate([(9.0, 6.0), (11.0, 9.5), (10.0, 7.0)]):
    print(f"update {i}: total={total:.3f}s (to_float=0.010 model={model:.3f} actor=2.000 value=0.500) "
          "loss_model_reco=3.5 loss_actor=-8.8 loss_value=32")
print("threads=2 torch=x autocast=off device=cpu")
seconds = 1.0 if os.environ.get("THP_MEM_ALLOC_ENABLE") == "0" else 2.0
print(f"torchrl_dreamer_update_s={seconds:.4f} batch=50 seq=50 horizon=15 obs=pixels")
"""


def test_peer_update_reads_the_median_phases_and_passes_the_huge_pages_setting(tmp_path, monkeypatch):
    peer = tmp_path / "peer.py"
    peer.write_text(FAKE_PEER)
    monkeypatch.setattr(run, "PEER", peer)
    monkeypatch.setenv("THP_MEM_ALLOC_ENABLE", "1")
    seconds, phases = run.peer_update(sys.executable, "pixels", "cpu", 3)
    assert seconds == 2.0
    assert phases == {"world_model": 7.0, "actor": 2.0, "value": 0.5}
    seconds, _ = run.peer_update(sys.executable, "pixels", "cpu", 3, huge_pages="0")
    assert seconds == 1.0


def test_markdown_has_every_section_of_a_harness_run():
    results = json.loads((ROOT / "docs" / "benchmarks" / "harness" / "cpu.json").read_text())
    text = run.markdown(results, "python -m benchmarks.run")
    update = results["update"][0]
    phases = " / ".join(f"{update['torchrl_phases_s'][name]:.2f}" for name in ("world_model", "actor", "value"))
    assert f"**{update['update_s']:.2f} s**" in text and f"{update['torchrl_update_s']:.2f} s ({phases})" in text
    assert f"with the variable at 0, the float32 pixel update takes {update['without_huge_pages']['update_s']:.2f} s" in text
    cem = results["cem"][0]
    assert f"| 1 env | {cem['plan_s']:.3f} s |" in text and f"{cem['plan_s'] / cem['bound_s']:.2f} |" in text
    assert "SB3's SAC `learn()` acting with its actor" in text
    assert f"{results['memory']['replay_bytes_per_64x64x3_transition']:,.0f} bytes" in text
    assert text.count("| batch ") == 3 and "1000 candidates, 16 env(s)" in text


def test_every_option_has_help_text():
    parser = run.build_parser()
    undocumented = [action.dest for action in parser._actions if not (action.help or "").strip()]
    assert not undocumented


def test_docs_are_rewritten_only_with_write_docs(tmp_path, monkeypatch):
    """A run prints its tables and writes its JSON; docs/benchmarks.md changes only on request."""
    written = []
    recorded = json.loads((ROOT / "docs" / "benchmarks" / "harness" / "cpu.json").read_text())["machine"]
    monkeypatch.setattr(run, "machine", lambda device: recorded)  # (measuring the machine takes seconds)
    monkeypatch.setattr(run, "memory_section", lambda: dict(replay_bytes_per_64x64x3_transition=12319.0))
    monkeypatch.setattr(run, "write_docs", lambda text, device: written.append((text, device)))
    argv = ["--sections", "memory", "--threads", "1", "--out", str(tmp_path)]
    run.main(argv)
    assert written == [] and (tmp_path / "cpu.json").exists()
    run.main([*argv, "--write-docs"])
    assert len(written) == 1 and "12,319 bytes" in written[0][0] and written[0][1] == "cpu"
    # the command recorded with the tables is the measuring command, without --write-docs
    assert f"python -m benchmarks.run --sections memory --threads 1 --out {tmp_path}" in written[0][0]
    assert "--write-docs" not in written[0][0]


def test_planet_diagnostics_compare_predicted_and_true_plan_returns():
    model = tiny_model(PlaNet, "MlpPolicy", "Pendulum-v1", seed=0)
    model.learn(40)
    rows = planet_diagnostics.diagnose(model, "Pendulum-v1", episodes=1, seed=0)
    assert len(rows) == 200 and rows[-1]["t"] == 199
    assert all(np.isfinite([r["predicted"], r["true"], r["elite_return"], r["candidate_return_std"]]).all() for r in rows)
    # Pendulum's rewards are at most 0: the true return of a 3-step plan is too
    assert all(r["true"] <= 0 for r in rows)
