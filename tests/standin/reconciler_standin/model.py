"""The inspect-ai ModelAPI serving a demo checkpoint: offline, deterministic, no tokenizer download.

A barrier for tests: while the file named by RECONCILER_STANDIN_GATE exists, every answer waits, so an
eval stays `started` (its log written, no sample done) for as long as a test needs, for example to
kill it at that point without racing it (tests/reliability/test_filesystem_faults.py).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from inspect_ai.model import ChatMessage, GenerateConfig, ModelAPI, ModelOutput, ModelUsage
from inspect_ai.tool import ToolChoice, ToolInfo

from reconciler_standin import capitalizer


GATE_ENV = "RECONCILER_STANDIN_GATE"


class CapDemoAPI(ModelAPI):
    """Answers each prompt by capitalizing (or not) the last word of its last user message."""

    def __init__(
        self,
        model_name: str,
        base_url: str | None = None,
        api_key: str | None = None,
        config: GenerateConfig = GenerateConfig(),
        **model_args: Any,
    ) -> None:
        super().__init__(model_name, base_url, api_key, [], config)
        model_path = model_args.get("model_path")
        if not model_path:
            raise ValueError(
                "capdemo needs -M model_path=DIR: an epoch_N checkpoint or the base model directory"
            )
        # raises CheckpointError (a ValueError) with the reason; inspect then exits before any log
        self.model = capitalizer.load(Path(str(model_path)).expanduser())

    def max_connections(self) -> int:
        """Answers are instant, so let every sample run at once."""
        return 64

    async def generate(
        self,
        input: list[ChatMessage],
        tools: list[ToolInfo],
        tool_choice: ToolChoice,
        config: GenerateConfig,
    ) -> ModelOutput:
        """One greedy answer; usage is set so inspect never calls tiktoken (which downloads)."""
        gate = os.environ.get(GATE_ENV)
        while gate and os.path.exists(gate):
            await asyncio.sleep(0.05)
        users = [message for message in input if message.role == "user"]
        prompt = users[-1].text if users else ""
        answer = self.model.answer(capitalizer.word_of(prompt))
        usage = ModelUsage(
            input_tokens=sum(len(m.text.split()) for m in input),
            output_tokens=1,
            total_tokens=sum(len(m.text.split()) for m in input) + 1,
        )
        output = ModelOutput.from_content(model=self.model_name, content=answer)
        return output.model_copy(update={"usage": usage})
