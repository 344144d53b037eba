"""One workflow behind the command line, batch and the panels: check, track (or reuse the
tracking a results folder already holds), identify, re-apply the user's corrections, save.

A results folder is a project. What a person put into it — hand corrections, identities, a
trained network — is never dropped without saying so: a re-run keeps the corrections (they are
recorded by blob, see :class:`~napari_trex.core.corrections.CorrectionsRecord`, and re-applied to
the new tracklets), keeps the network, and keeps the identities unless the new tracking makes
them stale; then it stops before any work with :class:`WouldLoseWork`, naming what would go,
and goes on only with ``overwrite`` (``--overwrite``; in the panels a confirmation).

Everything that can be checked before the work is checked before it: the output folder is
writable, the weights load, the video is the one the folder was made from
(:func:`video_fingerprint`).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .corrections import REMOVED, CorrectionsRecord
from .errors import Cancelled, NapariTrexError
from .model import TrackingRun
from .settings import Settings, parameter_info
from .video import Video, open_video

WEIGHTS_FILE = "identification_weights.pt"
IDENTITY_FILES = ("identities.npz", "identification.json")
Say = Callable[[str], None]


class WouldLoseWork(NapariTrexError):
    """A re-run would drop what the user made; ``dropping`` says what, ``reason`` why."""

    def __init__(self, folder: Path, dropping: list[str], reason: str) -> None:
        self.folder, self.dropping, self.reason = folder, dropping, reason
        super().__init__(f"{folder} holds {' and '.join(dropping)}, which {reason}: add "
                         "--overwrite to drop them, or choose another output folder")


# -- checks before the work --------------------------------------------------------------------------
def check_output_folder(folder: str | os.PathLike) -> Path:
    """``folder`` can take the results (it is made only when they are saved); a clear error
    otherwise, before any work."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NapariTrexError(f"{folder} is a file: the results need a folder (choose another "
                              "output folder)")
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise NapariTrexError(f"cannot make the results folder {folder}: {existing} is a file")
    if existing != folder:
        if not os.access(existing, os.W_OK | os.X_OK):
            raise NapariTrexError(f"cannot make the results folder {folder}: {existing} is not "
                                  "writable")
        return folder
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".napari-trex-probe-"):
            pass
    except OSError as exc:
        raise NapariTrexError(f"cannot write into {folder}: {exc.strerror or exc}") from None
    return folder


def check_weights(path: str | os.PathLike) -> None:
    """The weights file loads (before hours of tracking, not after)."""
    from .identification.network import load_weights

    import torch

    if not Path(path).is_file():
        raise NapariTrexError(f"--weights {path}: no such file")
    load_weights(path, torch.device("cpu"))


def video_fingerprint(video: Video) -> dict[str, Any]:
    """What identifies a recording: frame count and size, the file's size and modification
    time, and a hash of the first and the middle frame (a video replaced at the same path is
    caught even with the same number of frames)."""
    fingerprint: dict[str, Any] = {"frames": len(video), "frame_shape": list(video.frame_shape)}
    path = getattr(video, "path", None)
    if path and Path(path).is_file():
        stat = Path(path).stat()
        fingerprint.update(bytes=stat.st_size, mtime=stat.st_mtime)
    digest = hashlib.sha1()
    for index in sorted({0, len(video) // 2}) if len(video) else []:
        digest.update(np.ascontiguousarray(video.read(index)).tobytes())
    fingerprint["frames_sha1"] = digest.hexdigest()
    return fingerprint


def same_video(saved: TrackingRun, video: Video, fingerprint: dict[str, Any]) -> bool:
    """Whether ``saved`` was made from this video (the modification time alone does not count:
    a copied file is the same recording)."""
    old = saved.fingerprint
    if not old:  # folders written before fingerprints: path and length
        return Path(saved.video_info.path).resolve() == Path(getattr(video, "path", "")).resolve() \
            and saved.video_info.n_frames == len(video)
    keys = ("frames", "frame_shape", "bytes", "frames_sha1")
    return all(old.get(k) == fingerprint.get(k) for k in keys if k in old or k in fingerprint)


def same_tracking(requested: Settings, used: Settings, replaced: Iterable[str] = ()) -> bool:
    """Whether tracking with ``requested`` gives the run made with ``used`` (identification and
    output parameters aside; automatic values count as equal, and so do the defaults in
    ``replaced`` that the run measured instead, while they are still requested as defaults)."""
    replaced = set(replaced)
    for name in type(requested).model_fields:
        if parameter_info(name)["section"] in ("identification", "output", "corrections"):
            continue
        want, had = getattr(requested, name), getattr(used, name)
        automatic = (name == "track_max_individuals" and want == 0) or \
            (name == "blob_size_ranges" and (requested.auto_minmax_size
                                             or requested.track_max_individuals == 0)) or \
            (name in replaced and requested.measured_default(name))
        if want != had and not automatic:
            return False
    return True


# -- a results folder --------------------------------------------------------------------------------
@dataclass
class Project:
    """What a results folder holds (any part may be missing)."""

    folder: Path
    run: TrackingRun | None = None
    identities: Any = None
    edited: np.ndarray | None = None
    corrections: CorrectionsRecord = field(default_factory=CorrectionsRecord)

    @property
    def weights(self) -> Path | None:
        path = self.folder / WEIGHTS_FILE
        return path if path.is_file() else None

    @property
    def network_identities(self) -> int:
        """Tracklets whose identity the network gave (what a new tracking makes stale)."""
        if self.identities is None:
            return 0
        return int(np.isin(self.identities.source, ["network", "elimination", "inferred"]).sum())

    @classmethod
    def open(cls, folder: str | os.PathLike) -> Project:
        """Read a results folder back whole (an empty project where it holds no run)."""
        from .results import load_corrections, load_identities_and_edits, load_tracking

        folder = Path(folder)
        if not (folder / "run.json").is_file() and not any(folder.glob(".napari-trex-swap.json")):
            return cls(folder)
        run = load_tracking(folder)
        identities, edited = load_identities_and_edits(folder)
        if identities is not None and len(identities.identity) != len(run.result.tracklets):
            identities = edited = None  # of another tracking (should not happen; never mixed in)
        return cls(folder, run, identities, edited, load_corrections(folder))

    def video(self) -> Video:
        """The recording this folder was made from."""
        if self.run is None:
            raise NapariTrexError(f"{self.folder} holds no tracking run")
        path = Path(self.run.video_info.path)
        if not path.exists():
            raise NapariTrexError(f"the video of {self.folder} is gone: {path} does not exist")
        return open_video(path)


@dataclass
class Plan:
    """What a run will do with a results folder."""

    reuse: bool = False  # the folder's tracking fits: no tracking
    drop: list[str] = field(default_factory=list)  # files that go
    dropping: list[str] = field(default_factory=list)  # the same, in words
    reason: str = ""
    keep_corrections: bool = True


def plan_run(project: Project, video: Video, fingerprint: dict[str, Any], settings: Settings,
             identify: bool = False, retrack: bool = False) -> Plan:
    """Decide, before any work, what a run on ``project`` keeps and what it would drop."""
    run = project.run
    if run is None:
        return Plan()
    n_decisions = len(project.corrections)
    corrections = f"{n_decisions} hand correction(s)"
    network = "a trained identification network"
    identities = f"identities of {project.network_identities} tracklet(s)"
    if not same_video(run, video, fingerprint):
        dropping = [w for w, have in ((corrections, n_decisions), (identities, project.identities is not None),
                                      (network, project.weights is not None)) if have]
        return Plan(False, ["corrections.json", *IDENTITY_FILES, WEIGHTS_FILE], dropping,
                    f"were made from another video ({run.video_info.path}, "
                    f"{run.video_info.n_frames} frames)", keep_corrections=False)
    if same_tracking(settings, run.settings, run.auto.replaced_defaults) and not retrack:
        return Plan(reuse=True)
    n = settings.track_max_individuals
    if n and n != run.n_individuals:
        dropping = [w for w, have in ((corrections, n_decisions), (identities, project.identities is not None),
                                      (network, project.weights is not None)) if have]
        return Plan(False, ["corrections.json", *IDENTITY_FILES, WEIGHTS_FILE], dropping,
                    f"are for {run.n_individuals} animals, not {n}", keep_corrections=False)
    if project.network_identities and not identify:
        return Plan(False, list(IDENTITY_FILES), [identities],
                    "a new tracking makes stale (the network and your corrections are kept; "
                    "--identify identifies again)")
    return Plan()


# -- the steps -----------------------------------------------------------------------------------
@dataclass
class Outcome:
    """What a workflow run produced and said."""

    run: TrackingRun
    identification: Any = None
    identities: Any = None
    edited: np.ndarray | None = None
    corrections: CorrectionsRecord = field(default_factory=CorrectionsRecord)
    reused: bool = False
    saved: list[Path] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)


def apply_corrections(run: TrackingRun, identities: Any, record: CorrectionsRecord
                      ) -> tuple[Any, np.ndarray, dict[str, int]]:
    """Re-apply ``record`` to ``run`` (in place: splits change its tracklets); returns the
    identities, which tracklets are edited, and the report of :meth:`CorrectionsRecord.apply`."""
    result, identities, edited, report = record.apply(run.result, identities)
    if len(result.tracklets) != len(run.result.tracklets):
        from .tracklets import global_segments

        det = result.detections
        run.segments = global_segments(result.assignment, result.tracklets, det["x"], det["y"],
                                       det["split"], run.background.shape[:2])
    run.result = result
    return identities, edited, report


def save(folder: Path, outcome: Outcome, drop: tuple[str, ...] = ()) -> list[Path]:
    """Write the outcome into ``folder`` (all or nothing, see :mod:`results`)."""
    from .results import save_tracking

    settings = outcome.run.settings.updated(manual_matches=outcome.corrections.manual_matches,
                                            manual_splits=outcome.corrections.manual_splits)
    outcome.run.settings = settings
    outcome.saved = save_tracking(outcome.run, folder, outcome.identification,
                                  identities=outcome.identities, edited=outcome.edited,
                                  settings=settings, corrections=outcome.corrections, drop=drop)
    return outcome.saved


def run_workflow(video: str | os.PathLike | Video, folder: str | os.PathLike,
                 settings: Settings | None = None, *, identify: bool = False,
                 weights: str | os.PathLike | None = None, apply_only: bool = False,
                 retrack: bool = False, overwrite: bool = False, scheduler: str | None = "threads",
                 progress: Callable[..., None] | None = None,
                 events: Callable[[dict], None] | None = None,
                 should_stop: Callable[[], bool] | None = None,
                 say: Say | None = None) -> Outcome:
    """Track (or reuse), identify, re-apply the corrections and save into ``folder``.

    The same for the command line, batch and the panels. Nothing is written when a check
    fails; when identification fails after a new tracking, the tracking is saved first.
    """
    from .pipeline import track_video

    say = say or (lambda _message: None)
    settings = settings or Settings()
    identify = identify or settings.auto_train or settings.auto_apply  # TRex's headless switches
    if settings.auto_apply and not weights:  # the network already in the folder
        weights, apply_only = Path(folder) / WEIGHTS_FILE, True
        if not weights.is_file():
            raise NapariTrexError(f"auto_apply needs a trained network: {weights} does not exist "
                                  "(train first, or give --weights)")
    if (weights or apply_only) and not identify:
        raise NapariTrexError("--weights and --apply-only go with --identify")
    if apply_only and not weights:
        raise NapariTrexError("--apply-only needs weights from an earlier training (--weights FILE)")
    if not isinstance(video, Video):
        video = open_video(video)
    folder = check_output_folder(folder)
    if weights:
        check_weights(weights)
    project = Project.open(folder)
    fingerprint = video_fingerprint(video)
    plan = plan_run(project, video, fingerprint, settings, identify, retrack)
    if plan.dropping and not overwrite:
        raise WouldLoseWork(folder, plan.dropping, plan.reason)
    record = (project.corrections if plan.keep_corrections else CorrectionsRecord()).merged(
        CorrectionsRecord.from_settings(settings))
    if plan.reuse:
        run = project.run
        say(f"reusing the tracking in {folder} (--retrack to track again)")
        if not identify:
            outcome = Outcome(run, None, project.identities, project.edited, record, reused=True)
            if len(record) != len(project.corrections):  # corrections given with --settings
                outcome.identities, outcome.edited, _ = apply_corrections(run, project.identities, record)
                save(folder, outcome)
            return outcome
    else:
        run = track_video(video, settings, progress=progress, scheduler=scheduler,
                          should_stop=should_stop)
        run.fingerprint = fingerprint
        for line in run.auto.describe():
            say(line)
    outcome = Outcome(run, corrections=record, reused=plan.reuse)
    identities, outcome.edited, report = apply_corrections(run, None, record)
    outcome.identities = identities if len(record) else None
    if len(record):
        say(f"re-applied {report['applied']} hand correction(s)" +
            (f"; {report['not_found']} name a blob this tracking does not have (kept in the "
             "record)" if report["not_found"] else ""))
    if identify:
        from .identification.pipeline import identify as identify_run

        identification_settings = run.settings.updated(**{
            name: getattr(settings, name) for name in type(settings).model_fields
            if parameter_info(name)["section"] == "identification"})
        identification_settings = identification_settings.updated(
            manual_matches=record.manual_matches)
        try:
            identification = identify_run(run, video, identification_settings, progress=events,
                                          weights=str(weights) if weights else None,
                                          apply_only=apply_only, should_stop=should_stop)
        except (NapariTrexError, Cancelled) as exc:
            if not plan.reuse:  # never throw the finished tracking away
                save(folder, outcome, tuple(plan.drop))
                raise type(exc)(f"{exc} (the tracking is saved in {folder})") from None
            raise
        outcome.identification = identification
        outcome.identities, outcome.edited, _ = apply_corrections(run, identification.identities,
                                                                  record)
    save(folder, outcome, tuple(plan.drop))
    removed = 0 if outcome.identities is None else int((outcome.identities.source == REMOVED).sum())
    if removed:
        outcome.messages.append(f"{removed} tracklet(s) marked 'not an animal' stay out of the exports")
    return outcome


__all__ = ["Outcome", "Plan", "Project", "WouldLoseWork", "apply_corrections", "check_output_folder",
           "check_weights", "plan_run", "run_workflow", "same_tracking", "same_video", "save",
           "video_fingerprint"]
