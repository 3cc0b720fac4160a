"""Run the benchmarks and write ``bench/results.json`` (one flat object: metric name -> number).

``python -m bench`` runs all; ``python -m bench emulator speed`` runs the modules whose names contain
those words. Figures from modules not run are kept from the previous results file. With more than one
module, each runs in a process of its own: what one leaves in memory (the reconcile benchmark's 14M
cells, the batch benchmark's 1M records) otherwise slows the next one's Python (the speed apply path
measured ~25% slower after the others than alone).
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).with_name("results.json")


def main(argv: list[str]) -> None:
    names = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name.startswith("bench_"))
    if argv:
        names = [n for n in names if any(word in n for word in argv)]
    if len(names) > 1:
        for name in names:
            subprocess.run([sys.executable, "-m", "bench", name.removeprefix("bench_")], check=True)
        return
    results: dict[str, float] = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        print(f"== {name}", flush=True)
        started = time.perf_counter()
        figures = module.run()
        for key, value in figures.items():
            print(f"{key} = {value:,.4g}" if isinstance(value, float) else f"{key} = {value}", flush=True)
        print(f"   ({time.perf_counter() - started:.1f} s)", flush=True)
        results.update(figures)
        RESULTS.write_text(json.dumps(dict(sorted(results.items())), indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main(sys.argv[1:])
