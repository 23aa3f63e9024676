"""What the product's wheel installs into a user's environment, and what it does not."""

from __future__ import annotations

import tomllib
from importlib.metadata import distribution, packages_distributions, requires
from pathlib import Path

from reconciler.report.hints import DISTRIBUTION
from tests.conftest import REPO

NAME = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["name"]


def test_the_distribution_is_not_the_unrelated_reconciler_of_the_package_index() -> None:
    """`pip install reconciler` installs someone else's project: ours is named otherwise, and hints use that name."""
    assert NAME == DISTRIBUTION != "reconciler"
    assert NAME in packages_distributions()["reconciler"]  # the import package keeps its name
    assert {ep.name for ep in distribution(NAME).entry_points} == {"reconcile"}


def test_the_plot_is_in_the_default_install() -> None:
    """matplotlib is required without any extra: summary.md always gets its plot."""
    plain = [r for r in requires(NAME) or [] if "extra ==" not in r]
    assert any(r.startswith("matplotlib") for r in plain), plain


def test_the_product_registers_no_model_into_inspect_ai() -> None:
    """A stand-in model is a test's business: the wheel must not add one to every user's inspect-ai."""
    groups = {ep.group for ep in distribution(NAME).entry_points}
    assert groups == {"console_scripts"}, groups


def test_the_stand_ins_are_not_part_of_the_product() -> None:
    import importlib.util

    import reconciler

    assert importlib.util.find_spec("reconciler.demo") is None
    package = Path(reconciler.__file__).parent
    for module in package.rglob("*.py"):
        text = module.read_text()
        assert "modelapi" not in text and "reconciler_standin" not in text, module
