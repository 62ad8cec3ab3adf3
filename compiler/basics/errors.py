"""The one exception type the compiler raises for bad input.

Every message is a single line that names the offending key or file; the CLI prints it
as ``llmgen: error: <message>`` and exits with status 2, without a traceback.
"""


class LlmgenError(Exception):
    """Bad input: a config, a path, a hub id or a checkpoint the compiler cannot accept."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        # One line, and no control characters (a config key could carry terminal escapes).
        text = " ".join(str(message).split())
        super().__init__("".join(c if c.isprintable() else repr(c)[1:-1] for c in text))


class ConfigError(LlmgenError):
    """A config.json that is malformed, inconsistent or uses an unknown key."""


class UnsupportedError(LlmgenError):
    """A well-formed config that asks for something llmgen does not implement (yet)."""


class SourceError(LlmgenError):
    """A hub id, path or catalog entry that cannot be read."""


class CheckpointError(LlmgenError):
    """Weights beside a config that are corrupt, unsafe to open, or do not fit the model."""
