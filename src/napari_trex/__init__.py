"""napari-trex: multi-animal tracking with visual identification (TRex) in napari."""

import logging as _logging

__version__ = "0.1.0"

# A library never configures logging itself; the command line and napari decide what to show.
_logging.getLogger(__name__).addHandler(_logging.NullHandler())
