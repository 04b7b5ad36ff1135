"""Domain errors. The serving layer maps each class to one gRPC status code, in one place."""


class VisionError(Exception):
    """Base class of every error this project raises on purpose."""


class InvalidInputError(VisionError):
    """The request is malformed: corrupt bytes, wrong shape or dtype, empty request."""


class UnsupportedFormatError(InvalidInputError):
    """The bytes are a format this server does not decode (say, GIF or a multi-frame DICOM)."""


class ImageTooLargeError(VisionError):
    """The image has more pixels than the configured limit."""


class ModelNotFoundError(VisionError):
    """No model (or no such version of it) in the repository."""


class ModelUnavailableError(VisionError):
    """The model exists but is not ready: failed to load, unloading, or still loading."""


class ConfigError(VisionError):
    """A model's config file is invalid."""


class QueueFullError(VisionError):
    """The model's request queue is full; retry later."""


class DeadlineExceededError(VisionError):
    """The request's deadline passed before it was served."""


class DatasetNotFoundError(VisionError, FileNotFoundError):
    """A dataset (or a split or folder of one) is not where it was looked for."""
