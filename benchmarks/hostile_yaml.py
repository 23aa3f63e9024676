"""How long refusing a hostile experiment file takes: `python -m benchmarks.hostile_yaml`.

The files are the tests' own (tests/unit/test_yamlpos_c.py HOSTILE, tests/reliability/test_security.py
HOSTILE_FILES: anchor bombs, huge, deep and tagged documents). The tests check, by counting, that
the loader's bounds stop each one; this measures the time, which no test asserts. Each file is
loaded in a fresh process (`load_spec`, imports excluded), best of 3, with the peak memory growth.
Target: under a second each (README, Reliability and security).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET_SECONDS = 1.0
PROBE = r"""
import json, resource, sys, time
from pathlib import Path
from reconciler.errors import SpecError
from reconciler.spec.load import load_spec
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
try:
    load_spec(Path(sys.argv[1]))
    refused = False
except SpecError:
    refused = True
print(json.dumps({"seconds": time.perf_counter() - started, "refused": refused,
                  "rss_growth_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before}))
"""


def hostile_files() -> dict[str, bytes]:
    sys.path.insert(0, str(REPO))
    from tests.reliability.test_security import HOSTILE_FILES
    from tests.unit.test_yamlpos_c import HOSTILE

    files = {f"security: {k}": v.encode("latin-1" if k == "not UTF-8" else "utf-8") for k, v in HOSTILE_FILES.items()}
    files.update({f"yamlpos: {k}": v.encode() for k, v in HOSTILE.items()})
    return files


def measure(reps: int = 3) -> list[dict[str, object]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "experiment_summary.yaml"
        for name, data in sorted(hostile_files().items()):
            path.write_bytes(data)
            runs = []
            for _ in range(reps):
                proc = subprocess.run([sys.executable, "-c", PROBE, str(path)], check=True, capture_output=True,
                                      text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
                runs.append(json.loads(proc.stdout))
            best = min(runs, key=lambda r: r["seconds"])
            rows.append({"file": name, "bytes": len(data), **best})
    return rows


def main() -> int:
    rows = measure()
    print("| hostile file | bytes | refused | seconds (best of 3) | memory growth |")
    print("|---|---:|---|---:|---:|")
    for r in rows:
        print(f"| {r['file']} | {r['bytes']:,} | {'yes' if r['refused'] else 'NO'} | {r['seconds']:.3f} | "
              f"{int(r['rss_growth_kb']) // 1024} MB |")
    worst = max(rows, key=lambda r: r["seconds"])
    ok = all(r["refused"] for r in rows) and worst["seconds"] < TARGET_SECONDS
    print(f"\nslowest: {worst['file']} {worst['seconds']:.3f} s (target < {TARGET_SECONDS:g} s): {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
