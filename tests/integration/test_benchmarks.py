"""The benchmark scripts run (on small sizes), so they cannot rot; their figures live in docs/benchmarks.md."""

import json
import subprocess
import sys

from tests.conftest import ROOT


def test_prepare_benchmark_runs_and_reports(tmp_path):
    result = subprocess.run([sys.executable, "bench/prepare_throughput.py", "--records", "300"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((ROOT / "bench" / "results" / "prepare_throughput.json").read_text())
    assert report["records"] == 300 and report["records_per_s"] > 0
    assert sum(report["kept"].values()) + sum(report["dropped"].values()) == 300


def test_eval_throughput_benchmark_runs_and_reports():
    result = subprocess.run([sys.executable, "bench/eval_throughput.py", "--prompts", "4", "--batch-sizes", "1,4",
                             "--max-new-tokens", "4"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((ROOT / "bench" / "results" / "eval_throughput.json").read_text())
    assert [r["batch_size"] for r in report["results"]] == [1, 4] and report["results"][0]["speedup_vs_batch_1"] == 1.0
