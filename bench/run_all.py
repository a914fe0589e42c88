"""Run every benchmark in bench/ (results go to stdout; record them in bench/RESULTS.md).

    make bench            # or: python bench/run_all.py [--only render,sdf,meshprep,fit,evidence]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

BENCHES = {"render": "bench_render.py", "sdf": "bench_sdf.py", "meshprep": "bench_meshprep.py", "fit": "bench_fit.py",
           "evidence": "bench_evidence.py"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", default=",".join(BENCHES), help="comma-separated subset of " + ", ".join(BENCHES))
    args = parser.parse_args()
    here = Path(__file__).parent
    failed = []
    for name in args.only.split(","):
        print(f"=== {name} ===", flush=True)
        if subprocess.run([sys.executable, str(here / BENCHES[name])]).returncode != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
