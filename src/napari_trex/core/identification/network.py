"""The identification network and where it runs.

Two layouts (``visual_identification_version``, TRex's name). ``v118_3`` is TRex's
(trex-reference §4.2): three blocks of 5×5 convolution → batch norm → ReLU → 2×2 max pool →
spatial dropout with 16, 64 and 100 filters, then a per-position dense layer of 100, flatten
and a linear layer to N identities; the default. ``deep``, on request, keeps its poolings, widths
and head but makes each block two 3×3 convolutions (each with batch norm and ReLU): the same
reach per block, twice the depth. TRex's layout underfits zebrafish: trained from scratch (20
annealed epochs) on the images the accumulation accepted, it names only 98.0 % (test_A) /
97.7 % (test_B) of its own training images right, and its uniqueness on the frames not
trained on is 0.930 / 0.903; the deep layout's 99.6 / 99.0 % and 0.936 / 0.932. A training
step costs ~1.6x as long on a CPU. In the whole identification it gains too little for its
time: test_A with its documented sizes 0.943 -> 0.952 (224 s instead of 187 s), run as a
newcomer would (only the number of animals given) 0.942 -> 0.945 (248 s instead of 147 s),
test_B 0.935 -> 0.933; so TRex's stays the default.
Input is the 8-bit crop scaled to x/127.5 − 1. 'same' padding (as TRex v2) keeps any crop
size valid.

The device is chosen at run time — CUDA, then Apple MPS, then the CPU — and described in
plain words for the terminal and the GUI. On a CPU that computes bfloat16 natively the forward
passes run in it (:func:`fast_math`): training takes ~0.6x the time at the same accuracy.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
from collections.abc import Callable, Iterator
from typing import get_args

import numpy as np
import torch
from torch import nn

from ..settings import Settings


def choose_device(preference: str = "automatic") -> torch.device:
    """``automatic``: CUDA if present, else Apple MPS, else CPU; or the one asked for."""
    if preference == "cuda" or (preference == "automatic" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            from ..errors import NapariTrexError

            raise NapariTrexError("gpu_torch_device = cuda, but torch sees no CUDA GPU "
                                  "(set gpu_torch_device = automatic)")
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if preference == "mps" or (preference == "automatic" and mps is not None and mps.is_available()):
        if mps is None or not mps.is_available():
            from ..errors import NapariTrexError

            raise NapariTrexError("gpu_torch_device = mps, but Apple MPS is not available here")
        return torch.device("mps")
    return torch.device("cpu")


def describe_device(device: torch.device) -> str:
    """``"cuda: NVIDIA H100"``, ``"mps (Apple GPU)"`` or ``"cpu (2 threads, bfloat16)"``."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    if device.type == "mps":
        return "mps (Apple GPU)"
    return f"cpu ({_cpu_in_words(device)})"


def device_in_words(device: torch.device) -> str:
    """What a biologist needs to know about where training runs: "GPU: NVIDIA H100",
    "Apple GPU (MPS)" or "CPU only (2 threads) — training will be slower"."""
    if device.type == "cuda":
        return f"GPU: {torch.cuda.get_device_name(device)}"
    if device.type == "mps":
        return "Apple GPU (MPS)"
    return f"CPU only ({_cpu_in_words(device)}) — training will be slower"


def _cpu_in_words(device: torch.device) -> str:
    """``"2 threads"``, with ``", bfloat16"`` where the network computes in it."""
    return f"{torch.get_num_threads()} threads{', bfloat16' if native_bfloat16(device) else ''}"


CPU_SHARE_ENV = "NAPARI_TREX_CPU_SHARE"  # set by a batch: how many runs share this machine


def configure_cpu_threads() -> None:
    """Use the cores for the CPU back end (torch's default can be fewer in containers): all of
    them, or this run's share when a batch runs several at once (``NAPARI_TREX_CPU_SHARE``),
    so that the runs do not fight over the same cores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        share = max(1, int(os.environ.get(CPU_SHARE_ENV, "1")))
    except ValueError:
        share = 1
    if cores:
        torch.set_num_threads(max(1, cores // share))


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | None = None) -> Iterator[None]:
    """Run a block with torch's random numbers seeded, and give the caller's random state back
    afterwards (the napari process's global generator is not reset behind its back)."""
    devices = [device] if device is not None and device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


FLOAT32_ENV = "NAPARI_TREX_FLOAT32"  # 1 (anything but 0 / false / no): float32 on every device


def native_bfloat16(device: torch.device) -> bool:
    """Whether this device computes bfloat16 natively: a CPU with AVX-512 BF16 or AMX. There a
    training step under bfloat16 autocast takes ~0.57x the time of float32 (measured on 2 cores
    of a Xeon with AVX-512 BF16: 54 vs 95 ms for 64 images of 88x28 px); a CPU without it would
    emulate bfloat16 and be slower, so it keeps float32. GPUs keep float32: this small network
    is not limited by their arithmetic."""
    refused = os.environ.get(FLOAT32_ENV, "").strip().lower() not in ("", "0", "false", "no")
    if device.type != "cpu" or refused:
        return False
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def fast_math(device: torch.device) -> contextlib.AbstractContextManager:
    """Forward passes (training and prediction) under bfloat16 autocast where the device has it
    natively (:func:`native_bfloat16`); weights, gradients and the optimiser stay float32, so
    training is as stable as before (the identification benchmarks agree within run-to-run
    noise)."""
    return torch.autocast("cpu", dtype=torch.bfloat16) if native_bfloat16(device) \
        else contextlib.nullcontext()


_VERSION = Settings.model_fields["visual_identification_version"]
LAYOUTS = get_args(_VERSION.annotation)  # the setting's values: the one place they are named
DEFAULT_LAYOUT = str(_VERSION.default)
TREX_LAYOUT = "v118_3"  # TRex's layout: also that of weights files that do not say


class IdentityNetwork(nn.Module):
    """CNN of TRex's shape: crops (B, 1, H, W) uint8-scaled → logits (B, N); ``layout`` is
    ``deep`` or TRex's ``v118_3`` (see the module's text)."""

    def __init__(self, n_identities: int, size: tuple[int, int], dropout: float = 0.05,
                 image_scale: float | None = None, normalization: str | None = None,
                 layout: str = DEFAULT_LAYOUT, even_light: bool = True) -> None:
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"unknown network layout {layout!r}: {' or '.join(LAYOUTS)}")
        width, height = size
        self.n_identities = n_identities
        self.size = (int(width), int(height))
        self.image_scale = image_scale  # the scale its crops were cut at (None: not recorded)
        #: how its crops were aligned (``recognition_normalization``; None: not recorded)
        self.normalization = normalization
        self.layout = layout
        #: whether its crops' difference was evened out for the light (``samples.light_gain``)
        self.even_light = bool(even_light)

        def convolution(cin: int, cout: int, side: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, side, padding=side // 2), nn.BatchNorm2d(cout), nn.ReLU()]

        def block(cin: int, cout: int) -> nn.Sequential:
            layers = convolution(cin, cout, 5) if layout == TREX_LAYOUT else \
                convolution(cin, cout, 3) + convolution(cout, cout, 3)
            return nn.Sequential(*layers, nn.MaxPool2d(2), nn.Dropout2d(dropout))

        self.features = nn.Sequential(block(1, 16), block(16, 64), block(64, 100))
        self.dense = nn.Sequential(nn.Conv2d(100, 100, 1), nn.BatchNorm2d(100), nn.ReLU(),
                                   nn.Dropout2d(dropout))
        h, w = height // 8, width // 8
        self.classifier = nn.Linear(100 * h * w, n_identities)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.dense(self.features(images))
        return self.classifier(torch.flatten(x, 1))


def to_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 crops (M, H, W) → float (M, 1, H, W) in [-1, 1] on ``device`` (channels-last on a
    CPU: 20-30 % faster convolutions there, the same numbers)."""
    t = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    t = (t.float().unsqueeze(1) / 127.5) - 1.0
    return t.contiguous(memory_format=torch.channels_last) if device.type == "cpu" else t


def place(model: IdentityNetwork, device: torch.device) -> IdentityNetwork:
    """The network on ``device``, channels-last on a CPU (see :func:`to_tensor`)."""
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if device.type == "cpu" else model


def predict(model: IdentityNetwork, images: np.ndarray, device: torch.device,
            batch: int = 1024) -> np.ndarray:
    """Softmax probabilities (M, N), in batches (prediction never needs all images at once)."""
    return outputs(model, images, device, lambda logits: torch.softmax(logits, dim=1), batch)


def predict_either_way(model: IdentityNetwork, images: np.ndarray, device: torch.device,
                       batch: int = 1024) -> np.ndarray:
    """:func:`predict` averaged over each crop and the crop turned round (180 degrees), for
    crops whose head and tail nothing tells apart: a part of a blob split in one frame has no
    motion to point it, and its shape points it either way. One-frame parts named right, the
    crop as cut / turned round / averaged: realistic 8 x 3000 seed 2 54 / 51 / 67 %, crowded
    10 x 3000 seed 1 54 / 36 / 56 %; of the votes above 0.9, 64 % / 96 % (seed 2, as cut /
    averaged) were right: one way alone is confidently wrong as often as not."""
    turned = np.ascontiguousarray(images[:, ::-1, ::-1])
    return (predict(model, images, device, batch) + predict(model, turned, device, batch)) / 2


def outputs(model: IdentityNetwork, images: np.ndarray, device: torch.device,
            then: Callable[[torch.Tensor], torch.Tensor], batch: int = 1024) -> np.ndarray:
    """``then(model(crops))`` for uint8 crops (M, H, W), in batches under inference mode."""
    model.eval()
    out = np.empty((len(images), model.n_identities), np.float32)
    with torch.inference_mode(), fast_math(device):
        for k in range(0, len(images), batch):
            out[k: k + batch] = then(model(to_tensor(images[k: k + batch], device)).float()).cpu().numpy()
    return out


LEGACY_NORMALIZATION = "moments"  # the crops of weights files that do not say


def save_weights(model: IdentityNetwork, path: os.PathLike | str, meta: dict) -> None:
    """Weights plus what is needed to rebuild the network (atomically)."""
    from ..io import atomic_path

    with atomic_path(path) as tmp:
        plain = json.loads(json.dumps(meta, default=float))  # loadable with weights_only=True
        torch.save({"state": {k: v.cpu() for k, v in model.state_dict().items()},
                    "n_identities": int(model.n_identities), "size": [int(v) for v in model.size],
                    "image_scale": None if model.image_scale is None else float(model.image_scale),
                    "normalization": model.normalization, "layout": model.layout,
                    "even_light": model.even_light,
                    "meta": plain}, tmp)


def load_weights(path: os.PathLike | str, device: torch.device) -> tuple[IdentityNetwork, dict]:
    from ..errors import NapariTrexError

    try:
        # tensors and plain values only: a weights file from elsewhere cannot run code
        data = torch.load(path, map_location="cpu", weights_only=True)
        scale = data.get("image_scale")
        # files written before crops were straightened hold networks trained on turned crops
        normalization = str(data.get("normalization") or LEGACY_NORMALIZATION)
        # and files from before the deep layout hold TRex's
        model = IdentityNetwork(int(data["n_identities"]), tuple(data["size"]),
                                image_scale=None if scale is None else float(scale),
                                normalization=normalization,
                                layout=str(data.get("layout") or TREX_LAYOUT),
                                # and files from before the light was evened out, raw differences
                                even_light=bool(data.get("even_light", False)))
        model.load_state_dict(data["state"])
    except (OSError, KeyError, RuntimeError, ValueError, TypeError, EOFError,
            pickle.UnpicklingError) as exc:
        reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise NapariTrexError(f"cannot load identification weights from {path}: not a napari-trex "
                              f"weights file, or damaged ({reason})") from None
    return place(model, device), dict(data.get("meta", {}))
