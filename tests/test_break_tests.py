"""
The learning tests can fail: the cheapest (test, break) pair of ``benchmarks/break_tests.py`` runs in CI, in its own
process as the script runs it (docs/benchmarks.md, "The CI learning tests", has every pair's result).
"""

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.timeout(600)
def test_planet_with_random_planner_scores_fails_its_learning_test():
    command = [sys.executable, "-m", "benchmarks.break_tests", "--tests", "planet_learns_point_mass"]
    result = subprocess.run([*command, "--breaks", "random_planner_scores"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "planet_learns_point_mass / random_planner_scores: the test FAILED, as it should" in result.stdout
