"""Project exception types.

Every problem with user-supplied files (features, annotations, checkpoints) is raised as
one of these, with a message that names the file and what is wrong, so that a user sees
one clear sentence instead of a traceback from deep inside numpy or torch.
"""


class STCLError(Exception):
    """Base class of every error this project raises on purpose."""


class DataError(STCLError, ValueError):
    """A dataset file is missing, unreadable or inconsistent."""


class CheckpointError(STCLError, ValueError):
    """A checkpoint is missing, truncated, corrupted or does not fit the model."""


class VideoError(STCLError, ValueError):
    """A video file cannot be opened or decoded, has no video stream, or is too short."""


class WeightsError(STCLError, ValueError):
    """An I3D weights file is missing, unreadable, or its keys or shapes do not fit the network."""


class OutputError(STCLError, OSError):
    """An output file cannot be written (disk full, no permission, read-only folder); nothing
    half-written is left under its name."""
