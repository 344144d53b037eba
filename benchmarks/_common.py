"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import resource
from pathlib import Path


def rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def repeat_video(source: Path, target: Path, total_frames: int) -> Path:
    """Concatenate copies of ``source``'s packets (shifted in time) up to ``total_frames``."""
    import av

    with av.open(str(source)) as probe:
        n = probe.streams.video[0].frames
        step = int(round(n / probe.streams.video[0].average_rate / probe.streams.video[0].time_base))
    with av.open(str(target), "w") as out:
        out_stream = None
        written = 0
        rep = 0
        while written < total_frames:
            with av.open(str(source)) as src:
                stream = src.streams.video[0]
                if out_stream is None:
                    out_stream = out.add_stream_from_template(stream)
                for packet in src.demux(stream):
                    if packet.size == 0:
                        continue
                    packet.pts += rep * step
                    packet.dts += rep * step
                    packet.stream = out_stream
                    out.mux(packet)
            written += n
            rep += 1
    return target


