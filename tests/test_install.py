"""
``pip install sb3_rssm`` without extras is enough for the README's first snippet: a fresh venv gets torch first (as
the README says), then the package from this checkout, and runs the snippet's imports and a 200-step version of it
(``progress_bar=True`` included, whose tqdm and rich SB3 keeps in an extra).
"""

import pathlib
import shutil
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SNIPPET = textwrap.dedent(
    """
    from stable_baselines3.common.evaluation import evaluate_policy
    from sb3_rssm import DreamerV1
    from sb3_rssm.zoo import load_hyperparams

    model = DreamerV1(env="Pendulum-v1", **load_hyperparams("dreamer_v1", "Pendulum-v1"), seed=0)
    model.learn(200, progress_bar=True)
    mean_return, std_return = evaluate_policy(model, model.get_env(), n_eval_episodes=1)
    print("mean_return", mean_return)
    """
)


@pytest.mark.timeout(900)
def test_the_readme_snippet_runs_after_an_install_without_extras(tmp_path):
    # built from a copy: a build in the checkout would leave build/ there, whose stale files later builds reuse
    source = tmp_path / "source"
    source.mkdir()
    for name in ("sb3_rssm", "setup.cfg", "pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, source / name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    for target in ("torch==2.13.0", str(source)):
        result = subprocess.run([*pip, target], capture_output=True, text=True)
        assert result.returncode == 0, f"pip install {target} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    frozen = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "freeze"], capture_output=True, text=True).stdout
    assert "rl_zoo3" not in frozen and "dm_control" not in frozen.lower().replace("-", "_")  # no extras came along
    result = subprocess.run([str(venv / "bin" / "python"), "-c", SNIPPET], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mean_return -" in result.stdout
