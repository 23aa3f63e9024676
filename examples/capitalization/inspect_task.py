"""inspect-ai task for the capitalization demo (and the tests' stand-in experiment), shaped like cruijff_kit's blueprints/capitalization task."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from inspect_ai import Task, task
from inspect_ai.dataset import MemoryDataset, Sample
from inspect_ai.scorer import match
from inspect_ai.solver import Solver, generate, system_message


def _prompts(config_path: str) -> tuple[str, str]:
    """(prompt, system_prompt) from the run's YAML; prompts never travel by -T ({input} breaks YAML)."""
    if not config_path:
        return "{input}", ""
    config = yaml.safe_load(Path(config_path).read_text()) or {}
    prompt = config.get("prompt") or "{input}"
    if "{input}" not in prompt:
        raise ValueError(f"{config_path}: prompt must contain {{input}}")
    return prompt, config.get("system_prompt") or ""


@task
def capitalization(
    data_path: str,
    config_path: str = "",
    split: str = "test",
    vis_label: str = "",
    use_chat_template: bool = True,
) -> Task:
    """Capitalize the first letter of each word in `split` of a {"train","validation","test"} JSON file."""
    # vis_label only lands in the log's task_args: the name stays "capitalization" for observers
    prompt, system_prompt = _prompts(config_path)
    records = json.loads(Path(data_path).read_text())[split]
    dataset = MemoryDataset(
        [
            Sample(id=i, input=prompt.format(input=r["input"]), target=r["output"])
            for i, r in enumerate(records, start=1)
        ],
        name=f"{Path(data_path).stem}_{split}",
        location=str(data_path),
    )
    solver: list[Solver] = []
    if use_chat_template and system_prompt:
        solver.append(system_message(system_prompt))
    solver.append(generate())
    return Task(
        dataset=dataset,
        solver=solver,
        # case is the whole point: match() ignores it unless told otherwise
        scorer=match(location="exact", ignore_case=False),
        name="capitalization",
    )
