"""The reading commands (`tuner best`, `compare`, `--help`) start fast: they import neither Ray nor
torch (about 8 s of a cold start), only MLflow, to read a real store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from test_recorder import record_search

ROOT = Path(__file__).resolve().parents[1]
# Run in a fresh interpreter: this test process has imported Ray and torch already.
READ = """
import contextlib, json, sys
from tuner.cli import main
uri = sys.argv[1]
codes = [
    main(["best", "rec", "--tracking-uri", uri]),
    main(["best", "rec", "--json", "--tracking-uri", uri]),
    main(["compare", "rec", "rec", "--tracking-uri", uri]),
]
with contextlib.suppress(SystemExit):
    main(["--help"])
heavy = sorted({name.split(".")[0] for name in sys.modules} & {"ray", "torch", "optuna"})
print(json.dumps({"codes": codes, "heavy": heavy}))
"""


def test_best_and_compare_read_mlflow_without_importing_ray_or_torch(tmp_path):
    experiment, _ = record_search(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", READ, experiment.tracking_uri],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome == {"codes": [0, 0, 0], "heavy": []}, done.stderr
    assert "t1" in done.stdout and "t2" in done.stdout  # the trials were read from the store
