"""Kiln's exception tree: every error says what was wrong and what to do about it.

Exit codes of the `kiln` command: 0 done; 1 bad input (a flag, a file, a value); 2 a problem with the environment
or a service; 3 a compiled model whose outputs differ from its source's; 4 an unexpected error (a fault in Kiln:
run again with --debug for the traceback); 130 interrupted. A failed pipeline exits with its failed step's code.
"""

from __future__ import annotations

INTERNAL_ERROR_EXIT = 4
INTERRUPTED_EXIT = 130


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


class ParityFailed(KilnError):
    """A compiled model's outputs differ from its source's (ONNX Runtime's) by more than the tolerance."""

    exit_code = 3


class PipelineFailed(KilnError):
    """A step of a pipeline run failed; the message carries the step's own error and the exit code is the step's."""

    def __init__(self, message: str, *, exit_code: int = EnvironmentProblem.exit_code, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.exit_code = exit_code


class Interrupted(KilnError):
    """Long work stopped before it finished (Ctrl-C, a lost worker); where it can, it is resumed later."""

    exit_code = INTERRUPTED_EXIT
