"""The ``napari-trex`` command.

Every user error (missing file, corrupt video, unknown or impossible parameter) is printed
as one line, ``napari-trex: error: ...``, and the command exits non-zero; there is never a
traceback for bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .core.errors import NapariTrexError

EXIT_USER_ERROR = 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-trex",
        description="Track unmarked animals and keep their identities (TRex) - command line.",
    )
    parser.add_argument("--version", action="version", version=f"napari-trex {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    info = commands.add_parser("info", help="describe a video, image folder or TIFF stack")
    info.add_argument("video", help="video file, folder of numbered images, or multi-page TIFF")
    info.add_argument("--json", action="store_true", help="print the description as JSON")
    info.add_argument("--quick", action="store_true",
                      help="read only the header (skip scanning the packets of large files)")

    sample = commands.add_parser("sample", help="write the synthetic sample video with ground truth")
    sample.add_argument("output", help="video file to write (.mp4, .avi, .mov or .mkv)")
    sample.add_argument("--individuals", type=int, default=4, help="number of animals (default 4)")
    sample.add_argument("--frames", type=int, default=500, help="number of frames (default 500)")
    sample.add_argument("--size", type=int, default=512, help="width and height in px (default 512)")
    sample.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sample.add_argument("--polarity", choices=["dark_on_light", "light_on_dark"],
                        default="dark_on_light", help="dark animals on a light background or reverse")
    sample.add_argument("--realistic", action="store_true",
                        help="posture, legs, different sizes, resting, long contacts, uneven "
                             "flickering light: what real recordings do to a tracker")

    params = commands.add_parser(
        "params", help="list parameters, or check/convert a settings file (TOML or TRex .settings)")
    params.add_argument("--settings", help="a .toml file or a TRex .settings file to start from")
    params.add_argument("--set", dest="assignments", action="append", default=[], metavar="NAME=VALUE",
                        help="change one parameter (repeatable), e.g. --set track_max_speed=20")
    params.add_argument("--ignore-unknown", action="store_true",
                        help="skip names in a TRex .settings file that napari-trex does not use")
    params.add_argument("--save", metavar="FILE.toml", help="write the resulting settings as TOML")

    track = commands.add_parser(
        "track", help="detect and track the animals of a video into tracklets (writes CSV files)")
    track.add_argument("video", help="video file, folder of numbered images, or multi-page TIFF")
    track.add_argument("--output", "-o", required=True, metavar="DIR",
                       help="folder for the results (a run there is reused or replaced; its "
                            "corrections and network are kept)")
    track.add_argument("--settings", help="a .toml file or a TRex .settings file")
    track.add_argument("--set", dest="assignments", action="append", default=[], metavar="NAME=VALUE",
                       help="change one parameter (repeatable), e.g. --set track_max_individuals=8")
    track.add_argument("--ignore-unknown", action="store_true",
                       help="skip names in a TRex .settings file that napari-trex does not use")
    track.add_argument("--scheduler", default="processes",
                       help="where detection runs while tracking follows it: processes (default, "
                            "one per core), threads, synchronous, or a dask.distributed address "
                            "tcp://host:8786")
    track.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    track.add_argument("--identify", action="store_true",
                       help="then train the identification network and give every tracklet an identity")
    track.add_argument("--weights", metavar="FILE",
                       help="with --identify: start from these weights (e.g. another video of the "
                            "same animals)")
    track.add_argument("--apply-only", action="store_true",
                       help="with --identify --weights: only predict, do not train")
    track.add_argument("--retrack", action="store_true",
                       help="track again even if DIR holds the tracking of this video with these "
                            "parameters (it is reused otherwise)")
    track.add_argument("--overwrite", action="store_true",
                       help="allow dropping what DIR holds that the new run makes invalid (hand "
                            "corrections, identities, the network of another video or another "
                            "number of animals); without it the run stops first and says what")

    export = commands.add_parser(
        "export", help="write TRex-style per-individual trajectory files (cm) from a results folder")
    export.add_argument("dir", help="a folder written by napari-trex track")
    export.add_argument("--format", default="npz,csv", help="npz, csv or npz,csv (default)")
    export.add_argument("--set", dest="assignments", action="append", default=[], metavar="NAME=VALUE",
                        help="e.g. --set cm_per_pixel=0.0123 (units of the exported X, Y, SPEED)")
    export.add_argument("--validation-samples", action="store_true",
                        help="also copy <video>_validation_samples.npz into DIR/data")

    batch = commands.add_parser(
        "batch", help="track (and identify) many videos with the same settings, one dask task each")
    batch.add_argument("videos", nargs="+", help="video files")
    batch.add_argument("--settings", required=True, help="a .toml file (Save config) or TRex .settings")
    batch.add_argument("--output", "-o", metavar="DIR",
                       help="results go to DIR/<video name>/ (default: <video>_trex beside each video)")
    batch.add_argument("--identify", action="store_true", help="also run visual identification")
    batch.add_argument("--scheduler", default="processes",
                       help="processes (default), threads, or a dask.distributed address tcp://host:8786")
    batch.add_argument("--set", dest="assignments", action="append", default=[], metavar="NAME=VALUE")
    batch.add_argument("--ignore-unknown", action="store_true")
    batch.add_argument("--overwrite", action="store_true",
                       help="allow dropping corrections, identities or networks a new run makes "
                            "invalid (see track --overwrite)")

    view = commands.add_parser("view", help="open napari with a video (or the sample) loaded")
    view.add_argument("video", nargs="?", help="video or results folder to open; without it, the "
                      "synthetic sample")
    view.add_argument("--color", action="store_true", help="open in colour instead of greyscale")
    view.add_argument("--screenshot", metavar="PNG", help="save a screenshot of the window and quit")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return {
            "info": _info, "sample": _sample, "params": _params, "view": _view, "track": _track,
            "export": _export, "batch": _batch,
        }[args.command](args)
    except NapariTrexError as exc:
        print(f"napari-trex: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as exc:  # read-only folder, disk full, a folder where a file should go, ...
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"napari-trex: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("napari-trex: interrupted", file=sys.stderr)
        return 130


def _info(args: argparse.Namespace) -> int:
    from .core.video import open_video

    with open_video(args.video) as video:
        if not args.quick and hasattr(video, "frame_index"):
            video.frame_index()  # exact count, keyframe spacing and timing; reads, never decodes
        info = video.info
        if args.json:
            print(json.dumps(info.as_dict(), indent=2))
            return 0
        print(info.describe())
        if not args.quick and hasattr(video, "frame_index"):
            import numpy as np

            steps = np.diff(video.frame_times())
            if len(steps):
                print(f"frame gaps: {steps.min() * 1000:.1f} to {steps.max() * 1000:.1f} ms "
                      f"({'variable' if np.ptp(steps) > 1e-3 else 'constant'} frame rate)")
    return 0


def _sample(args: argparse.Namespace) -> int:
    from .core.datasets import generate
    from .core.video import VIDEO_EXTENSIONS

    out = Path(args.output)
    if out.suffix.lower() not in VIDEO_EXTENSIONS:
        raise NapariTrexError(f"{out.name}: choose a video extension (.mp4, .avi, .mov, .mkv)")
    if args.individuals < 1 or args.frames < 1 or args.size < 64 or args.size % 2:
        raise NapariTrexError("need --individuals >= 1, --frames >= 1 and an even --size >= 64")
    synthetic = generate(n_individuals=args.individuals, n_frames=args.frames, size=args.size,
                         seed=args.seed, polarity=args.polarity, realistic=args.realistic)
    video, truth = synthetic.write(out)
    print(f"wrote {video} ({args.frames} frames, {args.individuals} animals) and {truth}")
    return 0


def _load_settings(args: argparse.Namespace):
    """Settings from --settings and --set (validated before anything runs)."""
    from .core.settings import Settings, import_trex_settings, parse_assignments

    settings = Settings()
    if args.settings:
        path = Path(args.settings)
        if path.suffix.lower() == ".toml":
            settings = Settings.load(path)
        else:
            from .core.settings import NOT_IMPLEMENTED

            settings, skipped = import_trex_settings(path, strict=not args.ignore_unknown)
            unused = [n for n in skipped if n in NOT_IMPLEMENTED]
            unknown = [n for n in skipped if n not in NOT_IMPLEMENTED]
            if unused:
                print(f"notice: {len(unused)} TRex parameter(s) napari-trex does not implement "
                      f"were ignored: {', '.join(unused)}", file=sys.stderr)
            if unknown:
                print(f"skipped {len(unknown)} unknown name(s): {', '.join(unknown)}", file=sys.stderr)
    if args.assignments:
        settings = Settings.from_mapping(parse_assignments(args.assignments), base=settings)
    return settings


class TerminalProgress:
    """A one-line progress bar on stderr (a line per 10 % when stderr is not a terminal)."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.stage = None
        self.started = 0.0
        self.last_decile = -1

    def __call__(self, done: int, total: int, message: str = "", **_: object) -> None:
        import time

        if self.quiet:
            return
        now = time.perf_counter()
        if message != self.stage:
            if self.stage is not None and self.tty:
                sys.stderr.write("\n")
            self.stage, self.started, self.last_decile = message, now, -1
        fraction = done / max(total, 1)
        elapsed = now - self.started
        rate = f" ({done / elapsed:.0f}/s)" if elapsed > 0.2 else ""
        width = 30
        bar = "#" * int(fraction * width) + "-" * (width - int(fraction * width))
        line = f"{message:<22} [{bar}] {done}/{total}{rate}"
        if self.tty:
            sys.stderr.write("\r" + line)
            if done >= total:
                sys.stderr.write("\n")
                self.stage = None
        elif int(fraction * 10) > self.last_decile:
            self.last_decile = int(fraction * 10)
            sys.stderr.write(line + "\n")
        sys.stderr.flush()


def _track(args: argparse.Namespace) -> int:
    import time

    from .core.workflow import run_workflow

    settings = _load_settings(args)  # bad parameters fail here, before anything is read or written
    _check_scheduler(args.scheduler)
    started = time.perf_counter()
    output = Path(args.output)

    def say(line: str) -> None:
        print(line, file=sys.stderr if line.startswith("WARNING") else sys.stdout)

    outcome = run_workflow(args.video, output, settings, identify=args.identify,
                           weights=args.weights, apply_only=args.apply_only, retrack=args.retrack,
                           overwrite=args.overwrite, scheduler=args.scheduler,
                           progress=TerminalProgress(args.quiet), events=_print_event, say=say)
    if not outcome.reused:
        _print_tracking_summary(outcome.run)
    for line in outcome.messages:
        print(line)
    if outcome.saved:
        print(f"wrote {output} in {time.perf_counter() - started:.1f} s")
    else:
        print(f"{output} already holds this tracking; nothing to do")
    return 0


def _check_scheduler(scheduler: str) -> None:
    if scheduler not in ("processes", "threads", "synchronous") and "://" not in scheduler:
        raise NapariTrexError(f"--scheduler {scheduler!r}: use processes, threads, synchronous or a "
                              "dask.distributed address such as tcp://host:8786")


def _export(args: argparse.Namespace) -> int:
    from .core.export import export_trajectories
    from .core.results import load_identities_and_edits, load_tracking
    from .core.settings import parse_assignments

    formats = tuple(f.strip() for f in args.format.split(",") if f.strip())
    if not formats or set(formats) - {"npz", "csv"}:
        raise NapariTrexError(f"--format: npz, csv or npz,csv, not {args.format!r}")
    run = load_tracking(args.dir)
    if args.assignments:
        run.settings = run.settings.updated(**parse_assignments(args.assignments))
    identities, edited = load_identities_and_edits(args.dir)
    samples = None
    if args.validation_samples:
        samples = Path(args.dir) / f"{Path(run.video_info.path).stem}_validation_samples.npz"
        if not samples.is_file():
            raise NapariTrexError(f"{samples} does not exist: identify with "
                                  "--set recognition_save_training_images=true first")
    written = export_trajectories(run, args.dir, identities, edited, formats, samples)
    cm = run.settings.pixel_size_cm(run.video_info.width)
    assumed = "" if run.settings.cm_per_pixel > 0 else \
        (f", ASSUMED: cm_per_pixel is 0, the frame taken as {run.settings.meta_real_width:g} cm "
         "wide; --set cm_per_pixel=... to calibrate")
    print(f"wrote {len(written)} files into {Path(args.dir) / 'data'} "
          f"({'identities' if identities is not None else 'tracking slots'}; {cm:.5g} cm per "
          f"pixel{assumed})")
    return 0


def _batch(args: argparse.Namespace) -> int:
    from .core.batch import run_batch, summary_table

    settings = _load_settings(args)
    _check_scheduler(args.scheduler)
    rows = run_batch(args.videos, settings, args.output, args.identify, args.scheduler,
                     overwrite=args.overwrite)
    print(summary_table(rows))
    for row in rows:
        if row["status"] == "failed":
            print(f"napari-trex: {Path(row['video']).name}: {row['error']}", file=sys.stderr)
    return 0 if all(r["status"] != "failed" for r in rows) else EXIT_USER_ERROR


def _print_event(event: dict) -> None:
    """Steps on their own line; epochs and image cutting overwrite one line on a terminal (in
    logs: no epochs, and image cutting once, when done)."""
    if event.get("stage") == "images" and not sys.stdout.isatty():
        if event.get("done") == event.get("total"):
            print(f"{event['message']} ({event['total']} frames)", flush=True)
        return
    if event.get("stage") in ("epoch", "images"):
        if sys.stdout.isatty():
            sys.stdout.write("\r" + event["message"].strip().ljust(70))
            sys.stdout.flush()
        return
    if sys.stdout.isatty():
        sys.stdout.write("\r" + " " * 70 + "\r")
    print(event["message"], flush=True)


def _print_tracking_summary(run) -> None:
    import numpy as np

    from .core.tracklets import reason_names

    t = run.result.tracklets
    covered = (run.result.assignment >= 0).all(axis=1).mean()
    lengths = np.sort(t.length)[::-1]
    n50 = int(lengths[np.searchsorted(np.cumsum(lengths), lengths.sum() / 2)]) if len(lengths) else 0
    print(f"{run.n_individuals} animals, {len(t)} tracklets (half of the tracked frames lie in "
          f"tracklets of {n50}+ frames), all animals tracked in {covered:.0%} of frames")
    best = run.segments.best()
    if best is not None:
        from .core.tracklets import segment_coverage

        share = segment_coverage(run.segments, run.result.tracklet_of, t)
        print(f"{len(run.segments)} global segments, their tracklets hold {share:.0%} of the "
              f"animal-frames; best quality: frames {best[0]}-{best[1]}")
    else:
        print("no global segment (all animals in tracklets at once): identification will learn "
              "from tracklet pairs; if the animals are rarely apart that is expected, otherwise "
              "check track_max_individuals, blob_size_ranges and track_max_speed")
    reasons = np.bincount(t.end_reason, minlength=512)
    common = sorted(((int(c), code) for code, c in enumerate(reasons) if c), reverse=True)[:3]
    print("most frequent tracklet ends: " + ", ".join(f"{reason_names(code)} ({c})" for c, code in common))


def _params(args: argparse.Namespace) -> int:
    from .core.settings import parameter_info, parameter_names

    if args.settings is None and not args.assignments and not args.save:
        for name in parameter_names():
            info = parameter_info(name)
            unit = f" [{info['unit']}]" if info["unit"] else ""
            print(f"{name} = {info['default']!r}{unit}\n    {info['description']}")
        return 0
    settings = _load_settings(args)
    for name, value in settings.changed().items():
        print(f"{name} = {value!r}")
    if args.save:
        print(f"wrote {settings.save(args.save)}")
    return 0


def _view(args: argparse.Namespace) -> int:  # pragma: no cover - needs a display; tested via xvfb
    import napari

    from .napari.reader import read_video
    from .napari.sample_data import make_sample_data

    results = bool(args.video) and (Path(args.video) / "run.json").is_file()
    if results:  # a results folder: the video, tracks, animals and corrections
        from .core.results import load_tracking
        from .napari.reader import read_results

        load_tracking(args.video)  # fail early, on the command line, with our message
        layers = read_results(args.video)
    elif args.video:
        from .core.video import open_video

        open_video(args.video).close()  # fail early, on the command line, with our message
        layers = read_video(args.video, color=args.color)
    else:
        layers = make_sample_data()
    viewer = napari.Viewer(title="napari-trex")
    for data, meta, layer_type in layers:
        getattr(viewer, f"add_{layer_type}")(data, **meta)
    _, workspace = viewer.window.add_plugin_dock_widget("napari-trex", "napari-trex")
    tracking = workspace.panels["Track"]
    if results:
        workspace.show_tab("Correct")
    if not args.video:  # the sample's animals: ready to press Track
        tracking.form.field("track_max_individuals").value = 4
        tracking.form.field("track_max_speed").value = 30.0
    viewer.dims.set_current_step(0, 0)  # a recording starts at its first frame
    if args.screenshot:
        from qtpy.QtWidgets import QApplication
        from skimage.io import imsave

        viewer.window.resize(1366, 768)  # a laptop screen
        viewer.dims.set_current_step(0, min(100, viewer.dims.nsteps[0] - 1))
        QApplication.processEvents()
        viewer.reset_view()
        QApplication.processEvents()  # lay out the dock widgets before grabbing the window
        imsave(args.screenshot, viewer.screenshot(canvas_only=False, flash=False), check_contrast=False)
        viewer.close()
        print(f"wrote {args.screenshot}")
        return 0
    napari.run()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
