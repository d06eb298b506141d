"""The one progress type every stage takes: progress(done, total, step, message).

The CLI passes a tqdm bar, the job runner a callback that writes done/total/ETA and
may raise to stop the stage at a safe point (between whole items)."""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[int, int, str, str], None]


def no_progress(done: int, total: int, step: str = "", message: str = "") -> None:
    """The progress of a stage nobody watches."""


def scaled(progress: Progress, start: int, span: int, total: int) -> Progress:
    """A sub-stage's progress mapped into [start, start+span) of a parent's `total`,
    so a multi-stage job shows one bar that never jumps back."""
    def inner(done: int, sub_total: int, step: str, message: str) -> None:
        frac = done / sub_total if sub_total else 0.0
        progress(start + int(round(frac * span)), total, step, message)
    return inner
