"""Exceptions raised by the engine, each with a message that can be shown to users as is."""


class EngineError(Exception):
    """Base class for engine failures; str() is a user-readable message."""


class ModelLoadError(EngineError):
    """The configured model could not be loaded."""


class OutOfMemoryError(EngineError):
    """The device ran out of memory while generating."""


class GenerationCancelled(EngineError):  # noqa: N818 - a cancel is a request, not an error
    """The step callback asked to stop the running generation."""

    def __init__(self, message: str = "Generation cancelled.") -> None:
        super().__init__(message)


class UnsupportedSettingError(EngineError):
    """The request asks for a setting this model cannot follow (a clip skip past its text encoder's layers)."""
