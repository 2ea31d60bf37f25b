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

    def __init__(self, path: str, problems: list[str], where: list[str] | None = None) -> None:
        self.path = path
        self.problems = problems
        #: per problem, what to blame: the file, or ``--set`` for a command-line override
        self.where = where or [path] * len(problems)
        super().__init__("; ".join(f"{w}: {p}" for w, p in zip(self.where, problems, strict=True)))


class DataError(UserInputError):
    """A market-data file cannot be used (missing, unreadable, wrong format)."""


class ModelError(FlashMMError):
    """A prediction model is missing, corrupt or has the wrong schema."""

    exit_code = 2


class RuntimeFailure(FlashMMError):
    """Something failed while running (venue down, journal unwritable...)."""


class NotRunningError(FlashMMError):
    """No bot is listening on the control socket."""
