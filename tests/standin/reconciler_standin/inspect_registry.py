"""inspect-ai entry point: registers the `capdemo` model API (`--model capdemo/local -M model_path=DIR`)."""

from __future__ import annotations

from typing import Any

from inspect_ai.model import modelapi


@modelapi(name="capdemo")
def capdemo() -> type[Any]:
    """The provider class, imported only when `capdemo/...` is actually used."""
    from reconciler_standin.model import CapDemoAPI

    return CapDemoAPI
