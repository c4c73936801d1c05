"""Kiln's exception tree: every error says what was wrong and what to do about it."""

from __future__ import annotations


class KilnError(Exception):
    """Root of every error Kiln raises on purpose.

    ``exit_code`` is what the CLI exits with: 1 for bad input, 2 for a problem with the
    environment or a service.
    """

    exit_code: int = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


class InputError(KilnError):
    """The user gave something wrong: a flag, a file, a value."""

    exit_code = 1


class SettingsError(InputError):
    """kiln.yaml or a KILN_* variable holds an unknown key or a bad value."""


class WorkspaceError(InputError):
    """No workspace where one is needed, or a workspace that is not whole."""


class DatasetError(InputError):
    """A dataset is missing, unreadable, or not in Kiln's layout."""


class ValidationFailed(DatasetError):
    """A dataset broke its schema; ``problems`` lists each broken rule."""

    def __init__(self, message: str, problems: list[dict[str, object]], *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.problems = problems


class EnvironmentProblem(KilnError):
    """Something on the machine is missing or broken: an engine, disk, a tool."""

    exit_code = 2


class ServiceError(EnvironmentProblem):
    """A service could not be started, reached or stopped."""


class PortInUse(ServiceError):
    """A service's port is already taken by another process."""
