"""Exception types of the core.

Every error a user can cause (a missing file, a corrupt video, an unknown or impossible
parameter) is raised as one of these, with a message that says what to change. The command
line prints ``str(error)`` on one line and exits non-zero; the widgets show it as a napari
notification. Anything else that escapes is a bug.
"""

from __future__ import annotations


class NapariTrexError(Exception):
    """Base class: an error caused by the user's input, with a message meant for them."""


class VideoError(NapariTrexError):
    """A video, image folder or TIFF stack cannot be opened or read."""


class SettingsError(NapariTrexError):
    """A parameter is unknown, has an impossible value, or a settings file cannot be read."""


class Cancelled(NapariTrexError):
    """The user asked to stop. Whatever was saved before is left untouched."""
