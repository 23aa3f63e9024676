"""What the product's wheel installs into a user's environment, and what it does not."""

from __future__ import annotations

from importlib.metadata import distribution, packages_distributions
from pathlib import Path


def test_the_product_registers_no_model_into_inspect_ai() -> None:
    """A stand-in model is a test's business: the wheel must not add one to every user's inspect-ai."""
    (name,) = set(packages_distributions()["reconciler"])
    groups = {ep.group for ep in distribution(name).entry_points}
    assert groups == {"console_scripts"}, groups


def test_the_stand_ins_are_not_part_of_the_product() -> None:
    import importlib.util

    import reconciler

    assert importlib.util.find_spec("reconciler.demo") is None
    package = Path(reconciler.__file__).parent
    for module in package.rglob("*.py"):
        text = module.read_text()
        assert "modelapi" not in text and "reconciler_standin" not in text, module
