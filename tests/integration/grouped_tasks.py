"""Three inspect-ai tasks for the grouped-evals tests (each the capitalization task under its own name).

`cap_c` raises once when the file `fail_cap_c_once` sits beside its data: the file is removed as it
fails, so its retry succeeds (a task that fails in a shared job, then passes alone).
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from inspect_ai import Task, task
from inspect_ai.dataset import MemoryDataset, Sample
from inspect_ai.scorer import match
from inspect_ai.solver import Solver, generate, system_message


def _task(name: str, data_path: str, config_path: str) -> Task:
    config = yaml.safe_load(Path(config_path).read_text()) if config_path else {}
    prompt = (config or {}).get("prompt") or "{input}"
    system_prompt = (config or {}).get("system_prompt") or ""
    records = json.loads(Path(data_path).read_text())["test"]
    dataset = MemoryDataset([Sample(id=i, input=prompt.format(input=r["input"]), target=r["output"])
                             for i, r in enumerate(records, start=1)], name=f"{Path(data_path).stem}_test")
    solver: list[Solver] = [system_message(system_prompt)] if system_prompt else []
    solver.append(generate())
    return Task(dataset=dataset, solver=solver, scorer=match(location="exact", ignore_case=False), name=name)


@task
def cap_a(data_path: str, config_path: str = "", vis_label: str = "") -> Task:
    return _task("cap_a", data_path, config_path)


@task
def cap_b(data_path: str, config_path: str = "", vis_label: str = "") -> Task:
    return _task("cap_b", data_path, config_path)


@task
def cap_c(data_path: str, config_path: str = "", vis_label: str = "") -> Task:
    marker = Path(data_path).parent / "fail_cap_c_once"
    if marker.exists():
        marker.unlink()
        raise RuntimeError("cap_c fails on its first run (fail_cap_c_once)")
    return _task("cap_c", data_path, config_path)
