"""napari-trex: multi-animal tracking with visual identification (TRex) in napari."""

__version__ = "0.1.0"
