"""Commands the reconciler suggests to a person, runnable as printed from any directory.

A hint names the experiment file by its absolute path (summary.md is read from anywhere, and a
sibling file such as with-failure.yaml is not the directory's default) and the backend the
experiment runs on (`auto` may pick another scheduler than the one its jobs are on). Every word
is quoted for a POSIX shell.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

# The distribution's name on the package index ("reconciler" there is someone else's project);
# the import package and the `reconcile` command keep their names.
DISTRIBUTION = "experiment-reconciler"


def reconcile(verb: str, spec: Path, backend: str | None, *options: str) -> str:
    """`reconcile VERB /abs/spec.yaml [--backend NAME] OPTIONS...`, quoted."""
    words = ["reconcile", verb, str(spec)]
    if backend:
        words += ["--backend", backend]
    return shlex.join([*words, *options])


def command(*words: str | Path) -> str:
    """Any other command line, quoted."""
    return shlex.join(str(w) for w in words)


def reinstall() -> str:
    """How to install this project again into the Python running now (a dependency went missing).

    From a clone (an editable install, as scripts/demo makes), that clone; else the distribution's name.
    """
    import reconciler

    root = Path(reconciler.__file__).resolve().parents[1]
    target = ["-e", str(root)] if (root / "pyproject.toml").is_file() else [DISTRIBUTION]
    return shlex.join([sys.executable, "-m", "pip", "install", *target])
