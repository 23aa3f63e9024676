"""Where an offline plan's time goes, stage by stage, beside the stat floor.

    python -m benchmarks.breakdown /tmp/reconciler-bench/synth-10000 [--reps 5]

Each stage is timed on its own, as a new `reconcile plan` process runs it (the collector paused,
no cache of this process kept between repetitions); the minimum over repetitions is printed.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.plan_worker import stat_floor
from reconciler.engine import memo as pass_memo
from reconciler.journal import Journal
from reconciler.engine.loop import HEADER_CACHE
from reconciler.observe.evallogs import HeaderCache
from reconciler.observe.observation import observe, observe_files
from reconciler.engine.planning import plan_pass
from reconciler.plan.planner import Policy, plan
from reconciler.spec.load import load_spec, spec_path
from reconciler.spec.units import expand
from reconciler.spec.yamlpos import load_yaml


def best(fn: Callable[[], Any], reps: int, floors: list[float], paths: list[str]) -> tuple[float, Any]:
    """Minimum over `reps`; the stat floor is taken between repetitions, in the same conditions
    (back to back, the floor alone runs ~40% faster than between two stages of a pass)."""
    times, result = [], None
    for _ in range(reps):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
        floors.append(stat_floor(paths)[0])
    return min(times), result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.breakdown")
    parser.add_argument("exp", type=Path)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args(argv)
    exp = args.exp.resolve()
    gc.disable()
    text = spec_path(exp).read_text()
    paths = [p for p in (exp / "artifact-paths.txt").read_text().split("\n") if p]
    loaded = load_spec(exp, text)
    desired = expand(loaded)
    state = desired.layout.state_dir
    cache_path = state / HEADER_CACHE
    floors: list[float] = []

    def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
        return best(fn, args.reps, floors, paths)

    rows: list[tuple[str, float]] = []
    rows.append(("YAML parse (positions kept)", timed(lambda: load_yaml(spec_path(exp), text))[0]))
    rows.append(("YAML + validation (load_spec)", timed(lambda: load_spec(exp, text))[0]))
    rows.append(("expand into units", timed(lambda: expand(loaded))[0]))
    t, view = timed(lambda: Journal(state).read())
    rows.append(("journal read and fold", t))
    rows.append(("header cache file parse", timed(lambda: HeaderCache(cache_path))[0]))
    cache = HeaderCache(cache_path)
    t, files = timed(lambda: observe_files(desired, cache))
    rows.append(("observe files (list log dirs, stat, checkpoints)", t))
    t, observation = timed(lambda: observe(desired, view, None, cache, files=files))
    rows.append(("merge evidence (observe)", t))
    policy = Policy(max_attempts=loaded.spec.reconciler.max_attempts)
    rows.append(("plan", timed(lambda: plan(desired.units, observation, policy, experiment=desired.experiment))[0]))
    # What a new process does instead of all the above while no input changed: stat each input.
    key = pass_memo.memo_key(str(spec_path(exp)), text, (("auto", None, ()), True))
    the_plan, _ = plan_pass(exp, ("auto", None, ()), policy_for=lambda d: policy, backend_for=None)  # remembered
    t, memo = timed(lambda: pass_memo.recall(state, key))
    if memo is None or memo.plan != the_plan:
        raise SystemExit("the plan was not remembered (an input changed within the last 2 s?): run again")
    rows.append(("instead of all the above: recall the remembered plan (stat every input)", t))
    floor = min(floors)
    print(f"{len(desired.units):,} units, {len(paths):,} artifact paths; stat floor {floor * 1e3:.1f} ms\n")
    print("| stage | ms | / stat floor |\n|---|---:|---:|")
    for name, seconds in rows:
        print(f"| {name} | {seconds * 1e3:.1f} | {seconds / floor:.1f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
