"""Progress callbacks turned into a stream of events, for code that reports progress as a
generator (identification, and the panels' workers)."""

from __future__ import annotations

import queue
from collections.abc import Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

Event = dict[str, Any]


def progress_events(fn: Callable[..., Any], *args: Any, stage: str = "", **kwargs: Any
                    ) -> Generator[Event, None, Any]:
    """Run ``fn(*args, progress=..., **kwargs)`` in a helper thread and yield each of its
    progress callbacks ``(done, total, message)`` as an event (with ``stage``) while it runs;
    return its result (or raise its error). The caller's generator stays responsive: a panel
    sees progress during work that has no natural place to yield (decoding, cutting images)."""
    events: queue.Queue[Event] = queue.Queue()

    def progress(done: float, total: float, message: str = "", *_: Any, **__: Any) -> None:
        events.put({"stage": stage, "done": done, "total": total, "message": message})

    with ThreadPoolExecutor(1, thread_name_prefix="napari-trex") as pool:
        future = pool.submit(fn, *args, progress=progress, **kwargs)
        while not (future.done() and events.empty()):
            try:
                yield events.get(timeout=0.05)
            except queue.Empty:
                continue
        return future.result()
