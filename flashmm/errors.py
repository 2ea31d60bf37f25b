"""One exception tree for FlashMM. Only the CLI turns these into messages and exit codes."""

from __future__ import annotations


class FlashMMError(Exception):
    """Base of every error FlashMM raises on purpose. ``exit_code`` is what the CLI returns."""

    exit_code = 1


class UserInputError(FlashMMError):
    """The user gave something wrong (a file, a flag, a config value). Fix the input."""

    exit_code = 2


class ConfigError(UserInputError):
    """The config file is invalid; ``problems`` holds one line per problem."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__(f"{path}: " + "; ".join(problems))


class DataError(UserInputError):
    """A market-data file cannot be used (missing, unreadable, wrong format)."""


class ModelError(FlashMMError):
    """A prediction model is missing, corrupt or has the wrong schema."""

    exit_code = 2


class RuntimeFailure(FlashMMError):
    """Something failed while running (venue down, journal unwritable...)."""


class NotRunningError(FlashMMError):
    """No bot is listening on the control socket."""
