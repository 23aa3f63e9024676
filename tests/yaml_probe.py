"""Load one experiment file in a child process, counting the work the YAML loader's bounds allow.

What a hostile file (anchor bombs, huge or deeply nested documents) must not do is make the loader
work without bound. That is counted here, not timed: values composed (`_Loader.compose_node`),
values built (`yamlpos._build`, aliases expanded) and parser events read ahead of libyaml's
composer (`yaml.parse` in `yamlpos._prescan`). Each counter stops the load as soon as it passes
what MAX_NODES allows, so a broken bound fails the test at once instead of hanging it. A child
process: libyaml's C composer has no depth limit, and a file that reached it unchecked could
overflow the C stack. How long a refusal takes is measured by `python -m benchmarks.hostile_yaml`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import REPO

PROBE = r"""
import json, resource, sys
from pathlib import Path
import yaml
from reconciler.errors import SpecError
from reconciler.spec import yamlpos
from reconciler.spec.load import load_spec

LIMITS = {"composed": yamlpos.MAX_NODES + 1, "built": yamlpos.MAX_NODES + 1,
          "events": 2 * (yamlpos.MAX_NODES + 1) + 4}  # a start and an end event per value, stream and document
counts = dict.fromkeys(LIMITS, 0)

class Unbounded(Exception):
    pass

def count(name):
    counts[name] += 1
    if counts[name] > LIMITS[name]:
        raise Unbounded(name)

def counting(name, function):
    def wrapper(*args, **kwargs):
        count(name)
        return function(*args, **kwargs)
    return wrapper

yamlpos._build = counting("built", yamlpos._build)
yamlpos._Loader.compose_node = counting("composed", yamlpos._Loader.compose_node)
real_parse = yaml.parse
def parse(*args, **kwargs):
    for event in real_parse(*args, **kwargs):
        count("events")
        yield event
yaml.parse = parse

before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
unbounded = message = None
try:
    load_spec(Path(sys.argv[1]))
except SpecError as exc:
    message = str(exc)
except Unbounded as exc:
    unbounded = str(exc)
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps({"message": message, "unbounded": unbounded, "counts": counts, "limits": LIMITS,
                  "rss_growth_kb": grown}))
"""


def probe(path: Path) -> dict[str, Any]:
    """`message` (None: accepted), `unbounded` (the counter that passed its limit, or None), `counts`."""
    proc = subprocess.run([sys.executable, "-c", PROBE, str(path)], check=False, capture_output=True, text=True,
                          timeout=120, cwd=path.parent, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)
