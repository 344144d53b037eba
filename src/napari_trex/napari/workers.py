"""Long core work in a napari ``thread_worker``, with napari's progress bar and a cancel.

The core reports progress through callbacks (tracking) or as a generator of events
(identification) and stops when ``should_stop()`` says so. :class:`Job` runs either in a
worker thread, turns the progress into events for the panel's main-thread slots and into
napari's progress bar, and turns the outcome into notifications: results are handed over
only on success, so a cancelled or failed run leaves earlier layers untouched.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from typing import Any

from napari.qt.threading import thread_worker
from napari.utils import progress as napari_progress
from napari.utils.notifications import show_error, show_info

from ..core.errors import Cancelled, NapariTrexError
from ..core.progress import progress_events

Event = dict[str, Any]


def callback_events(fn: Callable[..., Any], *args: Any, should_stop: Callable[[], bool],
                    **kwargs: Any) -> Generator[Event, None, Any]:
    """Run ``fn(*args, progress=..., should_stop=..., **kwargs)`` and yield its progress
    callbacks ``(done, total, message)`` as events; return its result (or raise its error)."""
    return (yield from progress_events(fn, *args, should_stop=should_stop, **kwargs))


class Job:
    """One run of core work from a panel.

    ``make_events(should_stop)`` returns a generator of events whose return value is the
    result; ``on_event`` and ``on_result`` run in the main thread. ``what`` names the work in
    notifications ("tracking", "identification").
    """

    def __init__(self, what: str, make_events: Callable[[Callable[[], bool]], Generator],
                 on_event: Callable[[Event], None] | None = None,
                 on_result: Callable[[Any], None] | None = None,
                 on_finish: Callable[[str], None] | None = None) -> None:
        self.what = what
        self._stop = threading.Event()
        self._on_event, self._on_result, self._on_finish = on_event, on_result, on_finish
        self.outcome = ""  # "done", "cancelled" or "failed" once finished
        self.finished = False  # True once the panel has been told (buttons back, progress closed)
        self.progress = napari_progress(total=0, desc=what)  # napari's activity bar
        self.worker = thread_worker(self._run, start_thread=False)(make_events)
        self.worker.yielded.connect(self._yielded)
        self.worker.returned.connect(self._returned)
        self.worker.finished.connect(self._finished)

    def _run(self, make_events: Callable) -> Generator[Event, None, tuple[str, Any]]:
        """The core's outcome as a value: errors become notifications in the main thread,
        not napari's traceback dialog."""
        try:
            return "done", (yield from make_events(self._stop.is_set))
        except Exception as exc:  # noqa: BLE001 - reported in _returned
            return "error", exc

    def start(self) -> Job:
        self.worker.start()
        return self

    def cancel(self) -> None:
        """Ask the core to stop at its next check; the previous results stay."""
        self._stop.set()

    @property
    def running(self) -> bool:
        return self.outcome == ""

    def _yielded(self, event: Event) -> None:
        if self.outcome:  # delivered after the result: stale, it must not overwrite what the panel says
            return
        if event.get("total"):
            total, done = int(event["total"]), int(event["done"])
            if self.progress.total != total or done < self.progress.n:  # a new stage
                self.progress.reset(total=total)
            if done > self.progress.n:  # update() (not n =) so napari's activity shows it
                self.progress.update(done - self.progress.n)
        if event.get("message"):
            self.progress.set_description(f"{self.what}: {event['message'].strip()}")
        self.progress.refresh()
        # napari's progress bar may run the event loop while it repaints, and the result can
        # be handed over meanwhile: this event is then stale too (it left the Track tab saying
        # "tracking again at the speed measured 99%" over the finished run's summary)
        if self._on_event is not None and not self.outcome:
            self._on_event(event)

    def _returned(self, returned: tuple[str, Any]) -> None:
        kind, result = returned
        if kind == "error":
            self._errored(result)
            return
        self.outcome = "done"
        if self._on_result is not None:
            try:
                self._on_result(result)
            except NapariTrexError as exc:
                self.outcome = "failed"
                show_error(f"napari-trex: {exc}")

    def _errored(self, exc: BaseException) -> None:
        if isinstance(exc, Cancelled):
            self.outcome = "cancelled"
            show_info(f"napari-trex: {self.what} cancelled; the earlier results are kept")
        elif isinstance(exc, NapariTrexError):
            self.outcome = "failed"
            show_error(f"napari-trex: {exc}")
        else:
            self.outcome = "failed"
            show_error(f"napari-trex: {self.what} failed ({type(exc).__name__}: {exc}); "
                       "the earlier results are kept")

    def _finished(self) -> None:
        self.progress.close()
        if self.outcome == "":
            self.outcome = "cancelled" if self._stop.is_set() else "done"
        if self._on_finish is not None:
            self._on_finish(self.outcome)
        self.finished = True


class JobPanel:
    """What every panel that runs core work shares: its current job and a Cancel."""

    job: Job | None = None
    status: Any  # a magicgui Label

    def cancel(self, *_: Any) -> None:
        """Ask the running job to stop; the earlier results stay."""
        if self.job is not None and self.job.running:
            self.status.value = "cancelling…"
            self.job.cancel()
