"""Cold-start cost: the median time of `import function_app` in a fresh interpreter.

Each run is a new process with an empty environment (as the Functions host imports
the app before reading settings), so nothing is cached between samples.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROBE = (
    "import time; t = time.perf_counter(); import function_app; "
    "print(time.perf_counter() - t)"
)


def sample(python: str) -> float:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run([python, "-c", PROBE], cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    samples = sorted(sample(sys.executable) for _ in range(args.runs))
    print(f"import function_app: median {statistics.median(samples) * 1000:.1f} ms, "
          f"min {samples[0] * 1000:.1f} ms, max {samples[-1] * 1000:.1f} ms over {args.runs} runs")


if __name__ == "__main__":
    main()
