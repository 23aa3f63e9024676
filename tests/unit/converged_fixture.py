"""Build a converged experiment on disk by hand: complete checkpoints, a journal, real `.eval` logs."""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

from reconciler.journal import Journal
from reconciler.engine.loop import load_desired
from reconciler.spec.units import Desired, Unit

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "tests" / "standin" / "experiment"
TASK = REPO / "examples" / "capitalization" / "inspect_task.py"  # shared with the real demo
BASE_MODEL = DEMO / "base_model"
DATA = DEMO / "data" / "words.json"
EVAL_TIMEOUT = 180


def copy_demo(dst: Path, spec_text: str | None = None) -> Path:
    """The demo's inputs (not its outputs) in `dst`; `spec_text` replaces its experiment_summary.yaml."""
    dst.mkdir(parents=True, exist_ok=True)
    text = spec_text if spec_text is not None else (DEMO / "experiment_summary.yaml").read_text()
    (dst / "experiment_summary.yaml").write_text(text)
    shutil.copy2(TASK, dst / "inspect_task.py")
    for name in ("data", "base_model"):
        shutil.copytree(DEMO / name, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


def build_converged(dst: Path, spec_text: str | None = None) -> Desired:
    """A converged copy of the demo in `dst`. The evals run once per process and are copied after."""
    template = _template(spec_text)
    shutil.copytree(template, dst, symlinks=True)
    return load_desired(dst)


@functools.lru_cache(maxsize=None)
def _template(spec_text: str | None) -> Path:
    # Real `inspect eval` runs take seconds each: build one template per spec and copy it per test.
    top = Path(tempfile.mkdtemp(prefix="converged-"))
    atexit.register(shutil.rmtree, top, ignore_errors=True)
    root = top / "exp"
    copy_demo(root, spec_text)
    make_converged(load_desired(root))
    return root


def make_converged(desired: Desired) -> None:
    """Write what a finished apply leaves behind, so observe + plan see every unit done."""
    journal = Journal(desired.layout.state_dir)
    for n, unit in enumerate(desired.units, start=1):
        if unit.kind == "finetune":
            write_checkpoints(desired, unit)
        job_id = str(n)
        journal.append("submitted", unit=unit.key, job_id=job_id, fingerprint=unit.fingerprint, after=[])
        journal.append("job_state", unit=unit.key, job_id=job_id, state="COMPLETED", exit_code=0)
    run_evals([u for u in desired.units if u.kind == "eval"], desired.layout.experiment_dir)


def write_checkpoints(desired: Desired, unit: Unit) -> None:
    """Complete epochs the way torchtune 0.6.1 leaves them (fixtures/torchtune-0.6.1): each epoch's
    adapter files, and after every epoch but the last, `recipe_state/recipe_state.pt` beside them."""
    last = unit.epochs[-1]
    for epoch in unit.epochs:
        d = desired.layout.epoch_dir(unit.run, epoch)
        d.mkdir(parents=True, exist_ok=True)
        write_safetensors(d / "adapter_model.safetensors")
        (d / "adapter_config.json").write_text(json.dumps({"r": 4, "lora_alpha": 8}))
        (d / "config.json").write_text(json.dumps({"model_type": "llama"}))
        if epoch != last:
            (d.parent / "recipe_state").mkdir(exist_ok=True)
            (d.parent / "recipe_state" / "recipe_state.pt").write_bytes(b"recipe state")


def write_safetensors(path: Path) -> None:
    """A valid safetensors file: 8-byte little-endian header length, JSON header, then the data."""
    header = json.dumps({"lora_a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + struct.pack("<f", 1.0))


def inspect_cli() -> str:
    local = Path(sys.executable).with_name("inspect")
    found = str(local) if local.exists() else shutil.which("inspect")
    if not found:
        raise RuntimeError("the inspect CLI is not installed")
    return found


def eval_args(unit: Unit) -> list[str]:
    """The real `inspect eval` on the demo task, recording which unit and fingerprint the log is for."""
    assert unit.log_dir is not None
    args = [
        inspect_cli(), "eval", f"{TASK}@capitalization",
        "--model", "capdemo/local", "-M", f"model_path={BASE_MODEL}",
        "-T", f"data_path={DATA}",
        "--log-dir", str(unit.log_dir),
        "--metadata", f"run={unit.run}",
        "--metadata", f"reconciler_unit={unit.key}",
        # `fp-`: inspect YAML-parses metadata values, and an all-digit fingerprint would become an int.
        "--metadata", f"reconciler_fingerprint=fp-{unit.fingerprint}",
        "--display", "none",
    ]
    if unit.epoch is not None:
        args += ["--metadata", f"epoch={unit.epoch}"]
    return args


def run_evals(units: list[Unit], cwd: Path) -> None:
    """All evals at once (each is mostly interpreter start-up); any failure fails the fixture."""
    procs = [(u, subprocess.Popen(eval_args(u), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)) for u in units]
    failures = []
    for unit, proc in procs:
        out, err = proc.communicate(timeout=EVAL_TIMEOUT)
        if proc.returncode != 0:
            failures.append(f"{unit.key}: inspect eval exited {proc.returncode}\n{out}\n{err[-2000:]}")
    if failures:
        raise RuntimeError("\n".join(failures))
