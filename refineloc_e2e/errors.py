"""Project exceptions. Every error a user can cause names the file or value and what to do.

The CLI turns any ``RefineLocError`` into one line on stderr and a non-zero exit; anything else
is a bug and keeps its traceback.
"""


class RefineLocError(Exception):
    """Base class of every error the tool reports to the user as a one-line message."""


class InputError(RefineLocError):
    """A path given by the user does not exist, is not a file of the expected kind, etc."""


class DecodeError(RefineLocError):
    """A video file could not be decoded (corrupt, not a video, no video stream, ...)."""


class ConfigError(RefineLocError):
    """A configuration key or value is unknown or has the wrong type."""


class WeightsError(RefineLocError):
    """A weights file is missing, fails its checksum, or does not match the architecture."""


class CacheError(RefineLocError):
    """A cached feature file is unreadable, truncated or from an incompatible format."""


class DatasetError(RefineLocError):
    """Annotations or features of a dataset are missing or inconsistent."""


class ModelMismatchError(RefineLocError):
    """A trained head does not match the features it is asked to run on."""


class Cancelled(KeyboardInterrupt):
    """Work stopped on request (a Ray batch interrupted by its driver): cleaned up like a Ctrl-C."""
