"""A running fine-tune's epoch is due when torchtune's progress bar says: read from real job output."""

from __future__ import annotations

import os
from pathlib import Path

from reconciler.observe.progress import TAIL_BYTES, epoch_due, remaining_seconds
from tests.conftest import FIXTURES

SLURM_OUT = FIXTURES / "torchtune-0.6.1" / "slurm-progress" / "slurm-120.out"
MERGED_3EP = FIXTURES / "torchtune-0.6.1" / "merged-3ep" / "stdout.txt"


def cut_after(text: bytes, needle: bytes) -> bytes:
    """The output as it stood when `needle` was the last update written."""
    return text[: text.index(needle) + len(needle)]


def test_mid_epoch_the_last_update_of_the_real_bar_gives_the_remaining_time() -> None:
    text = SLURM_OUT.read_bytes()
    assert remaining_seconds(cut_after(text, b"30/64 [01:04<00:47,  1.38s/it]")) == 47
    assert remaining_seconds(cut_after(text, b"1/64 [00:03<03:13,  3.07s/it]")) == 3 * 60 + 13


def test_a_new_epochs_first_update_has_no_estimate_and_no_bar_is_no_clue() -> None:
    text = MERGED_3EP.read_bytes()
    second_epoch = text.index(b"2|4|Loss")
    new_bar = text.rindex(b"0/3 [00:00<?, ?it/s]", 0, second_epoch)
    assert remaining_seconds(text[: new_bar + len(b"0/3 [00:00<?, ?it/s]")]) is None
    assert remaining_seconds(text[: text.index(b"0/3 [00:00<?")]) is None  # start-up log lines only
    assert remaining_seconds(b"") is None


def test_the_due_time_is_the_outputs_mtime_plus_the_remaining_time_read_from_its_tail(tmp_path: Path) -> None:
    out = tmp_path / "slurm-7.out"
    # A long job's output: only its tail is read, and the bar's last update is in it.
    out.write_bytes(b"x" * (10 * TAIL_BYTES) + cut_after(SLURM_OUT.read_bytes(), b"30/64 [01:04<00:47,  1.38s/it]"))
    os.utime(out, (1_800_000_000, 1_800_000_000))
    assert epoch_due(out) == 1_800_000_047
    assert epoch_due(tmp_path / "slurm-8.out") is None  # not started writing
