"""Connecting to a dask.distributed cluster, with our error messages (detection, batch)."""

from __future__ import annotations

from typing import Any

from .errors import NapariTrexError


def distributed_client(address: str, timeout: str = "10s") -> Any:
    """A ``distributed.Client`` for ``address`` (tcp://host:8786), or a clear error."""
    try:
        from distributed import Client
    except ImportError:  # pragma: no cover - depends on the installation
        raise NapariTrexError("a scheduler address needs dask.distributed: "
                              "pip install 'napari-trex[cluster]'") from None
    try:
        return Client(address, timeout=timeout)
    except OSError as exc:
        raise NapariTrexError(f"cannot reach the dask scheduler at {address}: {exc}") from None
