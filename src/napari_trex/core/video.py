"""Reading videos, numbered image folders and TIFF stacks behind one interface.

The rest of napari-trex only ever sees a :class:`Video`: ``len(video)`` frames of shape
``video.frame_shape``, numbered 0, 1, 2, ... in the order a decoder outputs them. Frame ``i``
is the same image whether it is reached by decoding from the start (:meth:`Video.frames`,
the hot path of tracking) or by jumping to it (:meth:`Video.read`, what scrubbing in napari
does) — tracking results are stored per frame index, so anything else would silently shift
every trajectory.

Video files are decoded with PyAV (FFmpeg). Opening only reads the container header, so an
hour of 1080p opens at once; :meth:`Video.as_dask` wraps the video in a lazy dask array whose
chunks are decoded only when napari (or a detection task) touches them.

Random access in a compressed video is "seek to the keyframe at or before the frame, decode
forward to it". Many recordings have a keyframe only every few hundred frames, and some have
a variable frame rate, so frame indices cannot be computed from timestamps. The first jump
therefore builds a *frame index* by demultiplexing the packets (no decoding; a few µs per
frame): the sorted presentation timestamps give frame index ⇄ timestamp, and the keyframe
packets say where decoding may start. Small forward jumps decode forward without seeking,
and recently read frames are kept in a small cache.
"""

from __future__ import annotations

import bisect
import logging
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .errors import VideoError

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv")
TIFF_EXTENSIONS = (".tif", ".tiff")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".pgm")
DEFAULT_FPS = 25.0
"""Frame rate assumed for image folders and TIFF stacks, which do not store one."""

INDEX_AT_OPEN_MAX_MB = 512
"""Files up to this size are indexed when opened (exact frame count at once); larger ones
(an hour of HD) on the first jump, so that they still open instantly."""

_FORWARD_DECODE_LIMIT = 48
"""Without a frame index, jumps forward by at most this many frames are decoded, not sought."""


@dataclass(frozen=True)
class VideoInfo:
    """What is known about a recording without decoding it (``napari-trex info`` prints this)."""

    path: str
    kind: str  # "video file", "image folder" or "TIFF stack"
    n_frames: int
    fps: float
    fps_assumed: bool  # True when the source stores no frame rate (image folders, TIFF)
    width: int
    height: int
    channels: int  # 1 (greyscale) or 3 (colour), as read
    dtype: str
    codec: str
    duration: float  # seconds
    keyframe_interval: float | None = None  # median frames between keyframes, once indexed
    warnings: tuple[str, ...] = ()  # e.g. "the header says 100 frames but 30 were found"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """A few human-readable lines, as printed by ``napari-trex info``."""
        fps = f"{self.fps:g}" + (" (assumed; set frame_rate)" if self.fps_assumed else "")
        lines = [
            f"path:       {self.path}",
            f"kind:       {self.kind}",
            f"frames:     {self.n_frames}",
            f"fps:        {fps}",
            f"size:       {self.width} x {self.height} px",
            f"channels:   {self.channels} ({'colour' if self.channels == 3 else 'greyscale'})",
            f"dtype:      {self.dtype}",
            f"codec:      {self.codec}",
            f"duration:   {self.duration:.2f} s",
        ]
        if self.keyframe_interval is not None:
            lines.append(f"keyframes:  every {self.keyframe_interval:.0f} frames (median)")
        lines += [f"WARNING:    {w}" for w in self.warnings]
        return "\n".join(lines)


class Video:
    """A sequence of frames with exact random access. Use :func:`open_video` to get one.

    Subclasses implement :meth:`_read_uncached` and :meth:`_iter_range`; everything else
    (the cache, range reads, the dask array) is shared.
    """

    path: Path
    color: bool
    n_frames: int
    fps: float
    frame_shape: tuple[int, ...]
    dtype: np.dtype

    def __init__(self, path: Path, color: bool, cache_mb: float = 256.0) -> None:
        self.path = path
        self.color = color
        self.cache_mb = cache_mb
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_bytes = 0
        self._cache_lock = threading.Lock()
        self.warnings: list[str] = []

    # -- the interface ---------------------------------------------------------------------
    @property
    def info(self) -> VideoInfo:
        raise NotImplementedError

    @property
    def height(self) -> int:
        return self.frame_shape[0]

    @property
    def width(self) -> int:
        return self.frame_shape[1]

    def __len__(self) -> int:
        return self.n_frames

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, {len(self)} frames, {self.frame_shape})"

    def __enter__(self) -> Video:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release open files and the frame cache (the object can still be used afterwards)."""
        with self._cache_lock:
            self._cache.clear()
            self._cache_bytes = 0

    def frame_times(self) -> np.ndarray:
        """Time of each frame in seconds from the first one (real timestamps where stored)."""
        return np.arange(len(self), dtype=float) / self.fps

    def read(self, index: int) -> np.ndarray:
        """Frame ``index`` (negative counts from the end), exactly, from the cache if possible."""
        i = self._check_index(index)
        with self._cache_lock:
            frame = self._cache.get(i)
            if frame is not None:
                self._cache.move_to_end(i)
                return frame
        frame = self._read_uncached(i)
        frame.setflags(write=False)
        self._remember(i, frame)
        return frame

    def frames(self, start: int = 0, stop: int | None = None, step: int = 1, *,
               threads: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(index, frame)`` for ``range(start, stop, step)``, decoding sequentially.

        This is the fast path for processing a whole video: it starts one decoder at
        ``start`` (seeking exactly there) and never touches the random-access cache.
        ``threads``: decoder threads (None: FFmpeg's choice; 1 where several ranges are
        decoded in parallel already, which saves FFmpeg's threading overhead).
        """
        if step < 1:
            raise ValueError("step must be >= 1")
        start, stop = self._span(start, stop)
        for index, frame in self._iter_range(start, stop, threads):
            if (index - start) % step == 0:
                yield index, frame

    def coded_frames(self, start: int = 0, stop: int | None = None, *, threads: int | None = None
                     ) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
        """Like :meth:`frames`, but yield ``(index, coded, lut)`` where the frame is
        ``lut[coded]`` (``lut`` None: ``coded`` is the frame itself).

        A greyscale H.264 video stores limited-range luma (16..235); stretching every pixel to
        0..255 costs about 7 % of decoding. Detection compares pixels with thresholds, which can
        be moved into the coded values once (:func:`napari_trex.core.detection.detect_range`),
        so it asks for the coded frames and converts only the few pixels it keeps.
        """
        return self._iter_coded(*self._span(start, stop), threads)

    def _span(self, start: int, stop: int | None) -> tuple[int, int]:
        """``start`` checked (past the end: nothing to read) and ``stop`` clipped to the video."""
        stop = len(self) if stop is None else min(stop, len(self))
        return (self._check_index(start) if start < len(self) else start), stop

    def read_range(self, start: int, stop: int) -> np.ndarray:
        """Frames ``start .. stop-1`` stacked into one array (decoded sequentially)."""
        start, stop = max(0, start), min(stop, len(self))
        out = np.empty((max(0, stop - start), *self.frame_shape), dtype=self.dtype)
        n = 0
        for index, frame in self._iter_range(start, stop):
            out[index - start] = frame
            n += 1
        if n != len(out):
            raise VideoError(
                f"{self.path.name}: only {n} of frames {start}..{stop - 1} could be decoded; "
                "the file seems truncated or corrupt"
            )
        return out

    def as_dask(self, chunk_mb: float = 16.0):
        """A lazy dask array ``(frames, height, width[, 3])``; nothing is decoded until computed.

        Chunks hold as many whole frames as fit in ``chunk_mb``: small chunks keep scrubbing
        snappy (touching one frame decodes its chunk), large ones amortise seeking when a
        detection task processes a chunk. The graph is a single array layer, so building it
        costs the same for ten frames or ten hours.
        """
        import dask.array as da

        frame_bytes = int(np.prod(self.frame_shape)) * self.dtype.itemsize
        per_chunk = max(1, min(len(self), int(chunk_mb * 2**20 // max(1, frame_bytes))))
        chunks = (per_chunk, *self.frame_shape)
        token = f"napari-trex-video-{_file_token(self.path)}-{int(self.color)}-{per_chunk}"
        return da.from_array(
            _LazyFrames(self),
            chunks=chunks,
            name=token,
            fancy=False,
            asarray=False,
            meta=np.empty((0,) * (1 + len(self.frame_shape)), dtype=self.dtype),
        )

    # -- for subclasses ------------------------------------------------------------------------
    def _read_uncached(self, index: int) -> np.ndarray:
        raise NotImplementedError

    def _iter_range(self, start: int, stop: int, threads: int | None = None
                    ) -> Iterator[tuple[int, np.ndarray]]:
        for i in range(start, stop):
            yield i, self._read_uncached(i)

    def _iter_coded(self, start: int, stop: int, threads: int | None = None
                    ) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
        for index, frame in self._iter_range(start, stop, threads):
            yield index, frame, None

    def _check_index(self, index: int) -> int:
        i = int(index)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"frame {index} is outside 0..{len(self) - 1} of {self.path.name}")
        return i

    def _remember(self, index: int, frame: np.ndarray) -> None:
        budget = self.cache_mb * 2**20
        with self._cache_lock:
            if index in self._cache:
                return
            self._cache[index] = frame
            self._cache_bytes += frame.nbytes
            while self._cache_bytes > budget and len(self._cache) > 1:
                _, old = self._cache.popitem(last=False)
                self._cache_bytes -= old.nbytes

    def _convert(self, image: np.ndarray) -> np.ndarray:
        """Greyscale (H, W) or colour (H, W, 3), whatever the file stores."""
        if image.ndim == 3 and image.shape[2] == 4:
            image = image[..., :3]
        if self.color:
            if image.ndim == 2:
                image = np.repeat(image[..., None], 3, axis=2)
            return np.ascontiguousarray(image)
        if image.ndim == 3:
            image = rgb_to_grey(image)
        return np.ascontiguousarray(image)

    def __getstate__(self) -> dict[str, Any]:
        """Pickle the recipe, not open files or cached pixels (for dask.distributed workers)."""
        state = self.__dict__.copy()
        state["_cache"] = OrderedDict()
        state["_cache_bytes"] = 0
        state.pop("_cache_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._cache_lock = threading.Lock()


def rgb_to_grey(image: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma, as FFmpeg's ``gray`` conversion, keeping the input dtype."""
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    grey = image[..., :3].astype(np.float32) @ weights
    if np.issubdtype(image.dtype, np.integer):
        grey = np.clip(np.rint(grey), np.iinfo(image.dtype).min, np.iinfo(image.dtype).max)
    return grey.astype(image.dtype)


def _file_token(path: Path) -> str:
    """Changes when the file changes, so dask never mixes chunks of two versions of a file."""
    try:
        st = path.stat()
        return f"{abs(hash((str(path.resolve()), st.st_size, st.st_mtime_ns))):x}"
    except OSError:
        return f"{abs(hash(str(path))):x}"


def _read_range_or_black(video: Video, start: int, stop: int) -> np.ndarray:
    """For display: frames a damaged file cannot deliver are shown black, not as a crash."""
    try:
        return video.read_range(start, stop)
    except VideoError as exc:
        log.warning("%s", exc)
        out = np.zeros((stop - start, *video.frame_shape), dtype=video.dtype)
        for i in range(start, min(stop, len(video))):
            try:
                out[i - start] = video.read(i)
            except (VideoError, IndexError):
                break
        return out


class _LazyFrames:
    """The minimal array-like dask's ``from_array`` needs: shape, dtype, slicing."""

    def __init__(self, video: Video) -> None:
        self.video = video
        self.shape = (len(video), *video.frame_shape)
        self.dtype = video.dtype
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        first, rest = key[0], key[1:]
        if isinstance(first, slice):
            start, stop, step = first.indices(self.shape[0])
            if step == 1 and stop - start > 1:
                block = _read_range_or_black(self.video, start, stop)
            elif stop - start == 1:
                block = self.video.read(start)[None]
            else:
                block = np.stack([self.video.read(i) for i in range(start, stop, step)] or
                                 [np.empty(self.shape[1:], self.dtype)])[: len(range(start, stop, step))]
            return block[(slice(None), *rest)]
        return self.video.read(int(first))[rest]


# =============================================================================================
# Video files (PyAV)
# =============================================================================================


@dataclass
class _FrameIndex:
    """Presentation timestamps of every frame (sorted) and where decoding may start."""

    pts: np.ndarray  # int64, sorted; frame i has timestamp pts[i] (in stream time base)
    keyframes: list[int]  # frame indices of keyframes, ascending
    pts_to_frame: dict[int, int]


# Limited-range ("MPEG") luma 16..235 stretched to grey 0..255, exactly as FFmpeg's swscale
# converts yuv to gray8 (checked pixel for pixel in tests/core/test_video.py).
_LIMITED_TO_FULL = np.clip(np.round((np.arange(256) - 16) * 255 / 219), 0, 255).astype(np.uint8)
_PLANAR_YUV = frozenset({"yuv420p", "yuv422p", "yuv444p", "yuv411p", "yuv410p", "yuv440p",
                         "nv12", "nv21"})


def _coded_luma(frame: Any) -> tuple[np.ndarray, np.ndarray | None] | None:
    """The luma plane of a decoded frame as it is stored (a view, not copied) and the table
    that makes it grey (None: it is grey already), or None where only swscale knows the answer
    (full-range, high bit depth, RGB)."""
    name = frame.format.name
    if name == "gray":
        lut = None
    elif name in _PLANAR_YUV and int(getattr(frame, "color_range", 0) or 0) != 2:
        lut = _LIMITED_TO_FULL
    else:
        return None
    plane = frame.planes[0]
    y = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, :plane.width]
    return y, lut


def _luma(frame: Any) -> np.ndarray | None:
    """The grey image of a decoded frame straight from its luma plane (no colour conversion:
    about a third of the decoding time of a greyscale video), or None where only swscale knows
    the answer (full-range, high bit depth, RGB)."""
    coded = _coded_luma(frame)
    if coded is None:
        return None
    y, lut = coded
    return np.take(lut, y) if lut is not None else y.copy()


class _Decoder:
    """One open container + decoder, used by one thread; remembers where it stands."""

    def __init__(self, video: PyAVVideo, threads: int | None = None) -> None:
        import av

        self.video = video
        self.container = av.open(str(video.path))
        self.stream = self.container.streams.video[0]
        if threads == 1:
            self.stream.codec_context.thread_count = 1
        else:
            self.stream.thread_type = "AUTO"
        self._frames: Iterator[Any] | None = None
        self.next_index: int | None = None  # the index the next decoded frame will have

    def close(self) -> None:
        self._frames = None
        self.next_index = None
        self.container.close()

    def _restart_at_keyframe(self, index: int) -> None:
        """Position the decoder on a keyframe at or before frame ``index``."""
        frame_index = self.video.frame_index()
        k = bisect.bisect_right(frame_index.keyframes, index) - 1
        key = frame_index.keyframes[k] if k >= 0 else 0
        if key == 0:
            self.container.seek(0, backward=True, any_frame=False, stream=self.stream)
        else:
            self.container.seek(int(frame_index.pts[key]), backward=True, any_frame=False,
                                stream=self.stream)
        self._frames = self.container.decode(self.stream)
        self.next_index = None  # known again after the first decoded frame (by its timestamp)

    def _next(self) -> tuple[int, Any] | None:
        assert self._frames is not None
        try:
            frame = next(self._frames)
        except StopIteration:
            return None
        except Exception as exc:  # noqa: BLE001 - PyAV raises many types for broken data
            raise VideoError(f"{self.video.path.name}: decoding failed ({exc}); the file seems corrupt") from exc
        index = None
        if self.video._index is not None:
            index = self.video._index.pts_to_frame.get(_frame_key(frame))
        if index is None:
            index = self.next_index if self.next_index is not None else 0
        self.next_index = index + 1
        return index, frame

    def iter_from(self, start: int) -> Iterator[tuple[int, Any]]:
        """Yield (index, av.VideoFrame) from exactly ``start`` onwards."""
        if self._frames is None or self.next_index is None or not self._can_decode_forward(start):
            if start == 0 and self.video._index is None:
                self.container.seek(0, backward=True, any_frame=False, stream=self.stream)
                self._frames = self.container.decode(self.stream)
                self.next_index = 0
            else:
                self._seek_before(start)
        while True:
            item = self._next()
            if item is None:
                return
            if item[0] >= start:
                yield item

    def _can_decode_forward(self, target: int) -> bool:
        pos = self.next_index
        if pos is None or pos > target:
            return False
        index = self.video._index
        if index is None:
            return target - pos <= _FORWARD_DECODE_LIMIT
        # Seeking only pays off when a keyframe lies between here and the target.
        k = bisect.bisect_right(index.keyframes, target) - 1
        return k < 0 or index.keyframes[k] <= pos

    def _seek_before(self, target: int) -> None:
        """Seek so that the next decoded frame is at or before ``target`` (retry earlier if not)."""
        frame_index = self.video.frame_index()
        keyframes = frame_index.keyframes
        k = bisect.bisect_right(keyframes, target) - 1
        while True:
            key = keyframes[k] if k >= 0 else 0
            self._restart_at_keyframe(key)
            item = self._next()
            if item is None:
                raise VideoError(
                    f"{self.video.path.name}: frame {target} could not be decoded; the file seems "
                    "truncated or corrupt"
                )
            if item[0] <= target or key == 0:
                # put the frame back in front of the stream
                self._frames = _prepend(item[1], self._frames)
                self.next_index = item[0]
                return
            k -= 1  # landed after the target: the container's seek overshot; try one keyframe earlier


def _prepend(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest


def _frame_key(obj: Any) -> int | None:
    return obj.pts if obj.pts is not None else obj.dts


class PyAVVideo(Video):
    """A video file decoded with PyAV (FFmpeg): mp4, avi, mov, mkv and whatever FFmpeg reads."""

    def __init__(self, path: Path, color: bool = False, cache_mb: float = 256.0,
                 index_now: bool | None = None) -> None:
        super().__init__(path, color, cache_mb)
        import av

        try:
            container = av.open(str(path))
        except av.error.FFmpegError as exc:
            raise VideoError(f"{path.name} is not a video FFmpeg can read ({_ffmpeg_reason(exc)})") from exc
        try:
            if not container.streams.video:
                raise VideoError(f"{path.name} contains no video stream")
            stream = container.streams.video[0]
            ctx = stream.codec_context
            self.codec = ctx.name or "unknown"
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            self.fps = float(rate) if rate else DEFAULT_FPS
            self._fps_assumed = not rate
            self._time_base = stream.time_base or Fraction(1, 1_000_000)
            width, height = ctx.width, ctx.height
            if not width or not height:
                raise VideoError(f"{path.name}: the video stream has no frame size; the file seems corrupt")
            self.frame_shape = (height, width, 3) if color else (height, width)
            self.dtype = np.dtype(np.uint8)
            header_frames = int(stream.frames or 0)
            if stream.duration:
                self.duration = float(stream.duration * self._time_base)
            elif container.duration:
                self.duration = container.duration / 1e6
            else:
                self.duration = 0.0
        finally:
            container.close()
        self._index: _FrameIndex | None = None
        self._index_lock = threading.Lock()
        self._local = threading.local()
        if index_now is None:  # indexing reads the file (no decoding): do it now unless huge
            index_now = path.stat().st_size <= INDEX_AT_OPEN_MAX_MB * 2**20
        if header_frames > 0:
            self.n_frames = header_frames
        if index_now or header_frames <= 0:
            # exact frame count now (the header may be missing or wrong in damaged files)
            self.n_frames = len(self.frame_index().pts)
        if self.n_frames == 0:
            raise VideoError(f"{path.name} contains no frames")
        # Decode the first frame: cheap, and catches files whose header is fine but data is not.
        self.read(0)

    @property
    def info(self) -> VideoInfo:
        interval = None
        if self._index is not None and self._index.keyframes:
            keys = self._index.keyframes
            interval = float(np.median(np.diff(keys))) if len(keys) > 1 else float(len(self))
        return VideoInfo(
            path=str(self.path), kind="video file", n_frames=len(self), fps=self.fps,
            fps_assumed=self._fps_assumed, width=self.width, height=self.height,
            channels=3 if self.color else 1, dtype=str(self.dtype), codec=self.codec,
            duration=self.duration or len(self) / self.fps, keyframe_interval=interval,
            warnings=tuple(self.warnings),
        )

    def frame_index(self) -> _FrameIndex:
        """Build (once) the table frame index ⇄ timestamp and the keyframe positions."""
        if self._index is not None:
            return self._index
        with self._index_lock:
            if self._index is None:
                self._index = self._build_index()
                n = len(self._index.pts)
                if getattr(self, "n_frames", n) != n:
                    message = (f"the header says {self.n_frames} frames but {n} were found "
                               f"(truncated or damaged file?); using {n}")
                    log.warning("%s: %s", self.path.name, message)
                    self.warnings.append(message)
                    self.n_frames = n
        return self._index

    def _build_index(self) -> _FrameIndex:
        import av

        keys: list[int] = []
        key_packets: list[int] = []
        try:
            with av.open(str(self.path)) as container:
                stream = container.streams.video[0]
                for packet in container.demux(stream):
                    if packet.size == 0 or packet.is_discard:
                        continue
                    key = _frame_key(packet)
                    if key is None:
                        key = keys[-1] + 1 if keys else 0
                    keys.append(key)
                    if packet.is_keyframe:
                        key_packets.append(key)
        except av.error.FFmpegError as exc:
            if not keys:
                raise VideoError(f"{self.path.name} cannot be indexed ({_ffmpeg_reason(exc)})") from exc
            log.warning("%s: stopped indexing at a damaged packet (%s)", self.path.name, exc)
        pts = np.unique(np.asarray(keys, dtype=np.int64))
        pts_to_frame = {int(p): i for i, p in enumerate(pts)}
        keyframes = sorted({pts_to_frame[k] for k in key_packets} | {0}) if len(pts) else []
        return _FrameIndex(pts=pts, keyframes=keyframes, pts_to_frame=pts_to_frame)

    def frame_times(self) -> np.ndarray:
        pts = self.frame_index().pts
        return (pts - pts[0]).astype(float) * float(self._time_base)

    def _decoder(self) -> _Decoder:
        decoder = getattr(self._local, "decoder", None)
        if decoder is None:
            decoder = _Decoder(self)
            self._local.decoder = decoder
        return decoder

    def _to_array(self, frame: Any) -> np.ndarray:
        if not self.color:
            grey = _luma(frame)
            if grey is not None:
                return grey
        return frame.to_ndarray(format="rgb24" if self.color else "gray")

    def _read_uncached(self, index: int) -> np.ndarray:
        for i, frame in self._decoder().iter_from(index):
            if i == index:
                return self._to_array(frame)
            break
        raise VideoError(f"{self.path.name}: frame {index} could not be decoded; the file seems "
                         "truncated or corrupt")

    def _iter_range(self, start: int, stop: int, threads: int | None = None
                    ) -> Iterator[tuple[int, np.ndarray]]:
        for i, frame in self._iter_decoded(start, stop, threads):
            yield i, self._to_array(frame)

    def _iter_coded(self, start: int, stop: int, threads: int | None = None
                    ) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
        for i, frame in self._iter_decoded(start, stop, threads):
            coded = None if self.color else _coded_luma(frame)
            yield (i, *coded) if coded is not None else (i, self._to_array(frame), None)

    def _iter_decoded(self, start: int, stop: int, threads: int | None = None
                      ) -> Iterator[tuple[int, Any]]:
        """``(index, av.VideoFrame)`` for ``start .. stop-1``, decoded sequentially."""
        if start >= stop:
            return
        decoder = _Decoder(self, threads)  # its own decoder: never disturbs random access elsewhere
        try:
            expected = start
            for i, frame in decoder.iter_from(start):
                if i >= stop:
                    break
                if i != expected:
                    raise VideoError(f"{self.path.name}: frame {expected} is missing from the "
                                     "stream; the file seems corrupt")
                expected += 1
                yield i, frame
        finally:
            decoder.close()

    def close(self) -> None:
        super().close()
        decoder = getattr(self._local, "decoder", None)
        if decoder is not None:
            decoder.close()
            self._local.decoder = None

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("_local", None)
        state.pop("_index_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._local = threading.local()
        self._index_lock = threading.Lock()


def _ffmpeg_reason(exc: Exception) -> str:
    reason = getattr(exc, "strerror", None) or str(exc)
    return str(reason).split(":", 1)[0].strip() or type(exc).__name__


# =============================================================================================
# Numbered image files and TIFF stacks
# =============================================================================================

_NUMBER = re.compile(r"(\d+)")


def numbered_images(folder: Path) -> list[Path]:
    """The image files of ``folder`` in frame order (by the last number in their names).

    Only the most common image extension counts, so a stray ``preview.png`` beside
    ``frame_0001.tif`` ... does not become a frame.
    """
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
             and not p.name.startswith(".")]
    if not files:
        return []
    suffixes = [p.suffix.lower() for p in files]
    common = max(set(suffixes), key=suffixes.count)
    files = [p for p in files if p.suffix.lower() == common]

    def order(p: Path) -> tuple[int, str]:
        numbers = _NUMBER.findall(p.stem)
        return (int(numbers[-1]) if numbers else -1, p.name)

    return sorted(files, key=order)


class ImageSequence(Video):
    """A folder of numbered image files, one frame each."""

    def __init__(self, path: Path, color: bool = False, fps: float | None = None,
                 cache_mb: float = 256.0) -> None:
        super().__init__(path, color, cache_mb)
        self.files = numbered_images(path)
        if not self.files:
            raise VideoError(
                f"folder {path} contains no image files (looked for {', '.join(IMAGE_EXTENSIONS)})"
            )
        self.n_frames = len(self.files)
        self.fps = float(fps) if fps else DEFAULT_FPS
        self._fps_assumed = not fps
        first = self._convert(self._load(0))
        self.frame_shape = first.shape
        self.dtype = first.dtype

    def _load(self, index: int) -> np.ndarray:
        import imageio.v3 as iio

        file = self.files[index]
        try:
            return np.asarray(iio.imread(file))
        except Exception as exc:  # noqa: BLE001 - imageio raises many types
            raise VideoError(f"{file.name} in {self.path} is not a readable image ({exc})") from exc

    def _read_uncached(self, index: int) -> np.ndarray:
        image = self._convert(self._load(index))
        if image.shape != self.frame_shape:
            raise VideoError(f"{self.files[index].name} is {image.shape[1]}x{image.shape[0]} px but "
                             f"the first image is {self.width}x{self.height} px; all frames must match")
        return image.astype(self.dtype, copy=False)

    @property
    def info(self) -> VideoInfo:
        return VideoInfo(
            path=str(self.path), kind="image folder", n_frames=len(self), fps=self.fps,
            fps_assumed=self._fps_assumed, width=self.width, height=self.height,
            channels=3 if self.color else 1, dtype=str(self.dtype),
            codec=self.files[0].suffix.lstrip(".").lower(), duration=len(self) / self.fps,
        )


class TiffStack(Video):
    """A multi-page TIFF: one 2-D page (greyscale or RGB) per frame, read page by page."""

    def __init__(self, path: Path, color: bool = False, fps: float | None = None,
                 cache_mb: float = 256.0) -> None:
        super().__init__(path, color, cache_mb)
        import tifffile

        try:
            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                shape, axes = tuple(series.shape), series.axes
                dtype = series.dtype
                imagej_fps = (tif.imagej_metadata or {}).get("fps") if tif.is_imagej else None
        except Exception as exc:  # noqa: BLE001 - tifffile raises many types
            raise VideoError(f"{path.name} is not a readable TIFF file ({exc})") from exc
        if len(shape) == 2 or (len(shape) == 3 and axes.endswith("S")):
            shape = (1, *shape)
        frame_shape = shape[1:]
        if len(frame_shape) == 3 and frame_shape[2] in (3, 4):
            pass
        elif len(frame_shape) != 2:
            raise VideoError(f"{path.name} has axes {axes} {shape}; napari-trex reads stacks of "
                             "2-D frames (axes TYX or TYXS)")
        self.n_frames = shape[0]
        self.fps = float(fps or imagej_fps or DEFAULT_FPS)
        self._fps_assumed = not (fps or imagej_fps)
        self._local = threading.local()
        self._dtype_in = np.dtype(dtype)
        first = self._read_uncached_raw(0)
        self.frame_shape = first.shape
        self.dtype = first.dtype

    def _tif(self):
        import tifffile

        tif = getattr(self._local, "tif", None)
        if tif is None:
            tif = tifffile.TiffFile(self.path)
            self._local.tif = tif
        return tif

    def _read_uncached_raw(self, index: int) -> np.ndarray:
        try:
            image = self._tif().series[0].asarray(key=index) if self.n_frames > 1 \
                else self._tif().series[0].asarray()
        except Exception as exc:  # noqa: BLE001
            raise VideoError(f"{self.path.name}: page {index} cannot be read ({exc})") from exc
        return self._convert(np.asarray(image))

    def _read_uncached(self, index: int) -> np.ndarray:
        return self._read_uncached_raw(index)

    @property
    def info(self) -> VideoInfo:
        return VideoInfo(
            path=str(self.path), kind="TIFF stack", n_frames=len(self), fps=self.fps,
            fps_assumed=self._fps_assumed, width=self.width, height=self.height,
            channels=3 if self.color else 1, dtype=str(self.dtype), codec="tiff",
            duration=len(self) / self.fps,
        )

    def close(self) -> None:
        super().close()
        tif = getattr(self._local, "tif", None)
        if tif is not None:
            tif.close()
            self._local.tif = None

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("_local", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._local = threading.local()


class ArrayVideo(Video):
    """Frames already in memory (a numpy or dask array) behind the same interface.

    For data that is not a file: a napari layer, generated sample data, tests.
    """

    def __init__(self, frames: Any, fps: float = DEFAULT_FPS, name: str = "array") -> None:
        super().__init__(Path(name), color=getattr(frames, "ndim", 3) == 4, cache_mb=0)
        if frames.ndim not in (3, 4):
            raise VideoError(f"{name}: expected frames (T, H, W[, 3]), got shape {frames.shape}")
        self.array = frames
        self.n_frames = int(frames.shape[0])
        self.fps = float(fps)
        self.frame_shape = tuple(int(s) for s in frames.shape[1:])
        self.dtype = np.dtype(frames.dtype)

    def _read_uncached(self, index: int) -> np.ndarray:
        return np.asarray(self.array[index])

    def _iter_range(self, start: int, stop: int, threads: int | None = None
                    ) -> Iterator[tuple[int, np.ndarray]]:
        for i in range(start, stop):
            yield i, np.asarray(self.array[i])

    @property
    def info(self) -> VideoInfo:
        return VideoInfo(
            path=str(self.path), kind="array", n_frames=len(self), fps=self.fps, fps_assumed=False,
            width=self.width, height=self.height, channels=3 if self.color else 1,
            dtype=str(self.dtype), codec="none", duration=len(self) / self.fps,
        )


# =============================================================================================
# Opening and writing
# =============================================================================================


def is_video_path(path: str | os.PathLike) -> bool:
    """True for names napari-trex reads as a video: a video file, a TIFF, a folder."""
    p = Path(path)
    return p.suffix.lower() in VIDEO_EXTENSIONS + TIFF_EXTENSIONS or p.is_dir()


def open_video(path: str | os.PathLike, color: bool = False, fps: float | None = None,
               cache_mb: float = 256.0, index_now: bool | None = None) -> Video:
    """Open a video file, a folder of numbered images or a multi-page TIFF.

    ``index_now`` (video files): scan all packets now for an exact frame count; by default
    only for files up to ``INDEX_AT_OPEN_MAX_MB``. ``color=False`` (the default) gives
    greyscale frames ``(H, W)``, which is what tracking uses; ``color=True`` gives ``(H, W, 3)`` RGB. ``fps`` overrides the stored frame rate
    (image folders and TIFFs store none). Raises :class:`VideoError` with a message for the
    user when the path is missing or unreadable.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise VideoError(f"no such file or folder: {p}")
    if p.is_dir():
        return ImageSequence(p, color=color, fps=fps, cache_mb=cache_mb)
    if p.stat().st_size == 0:
        raise VideoError(f"{p.name} is empty (0 bytes)")
    if p.suffix.lower() in TIFF_EXTENSIONS:
        stack = TiffStack(p, color=color, fps=fps, cache_mb=cache_mb)
        if len(stack) == 0 or 0 in stack.frame_shape[:2]:
            stack.close()
            raise VideoError(f"{p.name} holds no images (0 frames)")
        return stack
    video = PyAVVideo(p, color=color, cache_mb=cache_mb, index_now=index_now)
    if fps:
        video.fps = float(fps)
        video._fps_assumed = False
    return video


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray | Iterable[np.ndarray],
    fps: float = 25.0,
    *,
    codec: str | None = None,
    keyframe_interval: int = 250,
    crf: int = 18,
    timestamps: Sequence[float] | None = None,
) -> Path:
    """Encode greyscale ``(H, W)`` or RGB ``(H, W, 3)`` uint8 frames into a video file.

    ``frames`` may be an array ``(T, H, W[, 3])`` or any iterable of frames (a generator
    keeps memory flat for long videos). Used for sample data, tests and benchmarks.
    ``keyframe_interval`` sets the GOP length (TRex users often have very sparse keyframes);
    ``timestamps`` (seconds, increasing, one per frame) makes a variable-frame-rate file. The
    codec follows the extension unless given: H.264 for mp4/mov/mkv, MPEG-4 part 2 for avi.
    Written atomically: a failed encode leaves no partial file behind.
    """
    import av

    from .io import atomic_path

    target = Path(path)
    if codec is None:
        codec = "mpeg4" if target.suffix.lower() == ".avi" else "libx264"
    rate = Fraction(fps).limit_denominator(1001)
    time_base = Fraction(1, 1000) if timestamps is not None else 1 / rate
    with atomic_path(target) as tmp:
        with av.open(str(tmp), mode="w") as container:
            stream = None
            n = 0
            for n, image in enumerate(frames):
                image = np.asarray(image)
                if stream is None:
                    if image.dtype != np.uint8 or image.ndim not in (2, 3):
                        raise ValueError("frames must be uint8 images (H, W) or (H, W, 3)")
                    height, width = image.shape[:2]
                    if height % 2 or width % 2:
                        raise ValueError(f"width and height must be even for {codec} "
                                         f"(got {width}x{height})")
                    fmt = "gray" if image.ndim == 2 else "rgb24"
                    stream = _open_encoder(container, codec, rate, time_base, width, height,
                                           keyframe_interval, crf)
                frame = av.VideoFrame.from_ndarray(image, format=fmt)
                if timestamps is not None:
                    if n >= len(timestamps):
                        raise ValueError("need one timestamp per frame")
                    frame.pts = int(round(timestamps[n] * 1000))
                else:
                    frame.pts = n  # time_base = 1 / fps
                frame.time_base = time_base
                for packet in stream.encode(frame):
                    container.mux(packet)
            if stream is None:
                raise ValueError("no frames to write")
            if timestamps is not None and n + 1 != len(timestamps):
                raise ValueError("need one timestamp per frame")
            for packet in stream.encode():
                container.mux(packet)
    return target


def _open_encoder(container: Any, codec: str, rate: Fraction, time_base: Fraction, width: int,
                  height: int, keyframe_interval: int, crf: int) -> Any:
    stream = container.add_stream(codec, rate=rate)
    stream.width, stream.height = width, height
    stream.pix_fmt = "yuv420p"
    stream.time_base = time_base
    stream.codec_context.time_base = time_base
    options = {"g": str(keyframe_interval), "keyint_min": str(keyframe_interval), "sc_threshold": "0"}
    if codec == "libx264":
        options.update({"crf": str(crf), "preset": "veryfast"})
    else:
        options["qscale"] = "3"
        stream.codec_context.gop_size = keyframe_interval
    stream.options = options
    return stream
