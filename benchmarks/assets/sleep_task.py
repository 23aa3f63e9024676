"""A real inspect-ai task whose samples sleep: a short, predictable eval for the benchmarks.

The data file (`-T data_path=...`, the spec's training data) is JSON with a `test` split and an
optional `eval_seconds` (how long each sample sleeps; samples run concurrently). The model named on the
command line (`mockllm/model` in the benchmarks) is never called: the solver answers itself,
so no weights load and nothing reaches for the network (mockllm's token counter would). The
checkpoint path arrives as a model arg and is only recorded in the log.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from inspect_ai import Task, task
from inspect_ai.dataset import MemoryDataset, Sample
from inspect_ai.model import ModelOutput
from inspect_ai.scorer import includes
from inspect_ai.solver import Generate, Solver, TaskState, solver


@solver
def pause_and_answer(seconds: float) -> Solver:
    """Sleep, then answer with the target (a perfect, instant model)."""

    async def solve(state: TaskState, generate_: Generate) -> TaskState:
        if seconds > 0:
            await asyncio.sleep(seconds)
        state.output = ModelOutput.from_content(model="sleepy", content=state.target.text)
        return state

    return solve


@task
def sleepy(data_path: str, config_path: str = "", vis_label: str = "", split: str = "test") -> Task:
    """Each sample sleeps `eval_seconds`, then answers; `includes` scores it."""
    data = json.loads(Path(data_path).read_text())
    seconds = float(data.get("eval_seconds", 0.0))
    records = data[split]
    dataset = MemoryDataset(
        [Sample(id=i, input=r["input"], target=r["output"]) for i, r in enumerate(records, start=1)],
        name=f"{Path(data_path).stem}_{split}",
        location=str(data_path),
    )
    return Task(dataset=dataset, solver=[pause_and_answer(seconds)], scorer=includes(), name="sleepy")


# More task names for sweeps with several tasks per cell (the spec names them; each is the same eval).
@task
def sleepy2(data_path: str, config_path: str = "", vis_label: str = "", split: str = "test") -> Task:
    return sleepy(data_path, config_path, vis_label, split)


@task
def sleepy3(data_path: str, config_path: str = "", vis_label: str = "", split: str = "test") -> Task:
    return sleepy(data_path, config_path, vis_label, split)


@task
def sleepy4(data_path: str, config_path: str = "", vis_label: str = "", split: str = "test") -> Task:
    return sleepy(data_path, config_path, vis_label, split)
