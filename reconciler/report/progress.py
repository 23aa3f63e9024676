"""Progress of apply/watch: a live panel in a terminal, one line per change otherwise."""

from __future__ import annotations

import time
from collections import Counter
from typing import TextIO

from reconciler.engine.loop import PassResult
from reconciler.plan.planner import STATES
from reconciler.spec.units import Desired

STATE_STYLE = {"done": "green", "running": "cyan", "queued": "blue", "failed": "red", "blocked": "red",
               "unknown": "yellow", "outdated": "magenta", "waiting": "dim", "missing": "dim"}


class Progress:
    """Keeps the last counts so that only changes are printed."""

    def __init__(self, out: TextIO, desired: Desired, note: str):
        self.out = out
        self.started = time.monotonic()
        self.last: Counter[str] | None = None
        self.passes = 0
        self.tty = out.isatty()
        self.live = None
        self.recent: list[str] = []
        self._line(f"{desired.experiment}: {len(desired.units)} units; {note}")

    def _stamp(self) -> str:
        return time.strftime("%H:%M:%S")

    def _line(self, text: str) -> None:
        if self.live is not None:
            self.recent = (self.recent + [text])[-10:]
            return
        self.out.write(f"[{self._stamp()}] {text}\n")
        self.out.flush()

    def on_pass(self, result: PassResult) -> None:
        self.passes += 1
        for event in result.events:
            if event.kind in ("job_state",):
                continue
            self._line(f"{event.kind} {event.unit}: {event.detail}")
        if result.applied is not None:
            for error in result.applied.errors:
                self._line(f"error {error}")
        counts = result.plan.state_counts()
        if not result.plan.scheduler_known and result.plan.scheduler_note:
            self._line(f"scheduler unknown: {result.plan.scheduler_note}")
        if counts != self.last or result.converged:
            self._line(self.counts_text(counts))
            self.last = counts
        if self.tty:
            self._refresh(result)
        if result.converged:
            self._line(f"converged after {self.passes} pass(es), {time.monotonic() - self.started:.0f}s: "
                       + result.plan.summary_line())

    def on_interval(self, seconds: float) -> None:
        """Adaptive polling changed the wait between passes: say so, so a quiet log is not a hung one."""
        self._line(f"polling every {seconds:.0f}s" if seconds >= 10 else f"polling every {seconds:.1f}s")

    def counts_text(self, counts: Counter[str]) -> str:
        parts = [f"{counts[s]} {s}" for s in STATES if counts[s]]
        return f"pass {self.passes} ({time.monotonic() - self.started:.0f}s): " + ", ".join(parts)

    def _refresh(self, result: PassResult) -> None:
        from rich.console import Group
        from rich.live import Live
        from rich.text import Text

        counts = result.plan.state_counts()
        line = Text(f"elapsed {time.monotonic() - self.started:.0f}s  pass {self.passes}  ")
        for s in STATES:
            if counts[s]:
                line.append(f"{counts[s]} {s}  ", style=STATE_STYLE.get(s, ""))
        body = Group(*[Text(r) for r in self.recent], line)
        if self.live is None:
            self.live = Live(body, auto_refresh=False, transient=False)
            self.live.start()
        self.live.update(body, refresh=True)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
