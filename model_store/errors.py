"""The root of every llmfleet error, and the exit codes CI relies on.

Each domain raises its own subclass (ManifestError, PlanError, StoreError...) whose message
says what, where and what is allowed; the edges (the CLI, `app.py`) catch LlmfleetError
once, print that message as one line and exit with the class's `exit_code`.
"""

from __future__ import annotations

EXIT_REFUSED = 1  # the request was refused: doesn't fit, rejected adapter, lost race, AWS unreachable...
EXIT_BAD_INPUT = 2  # bad input: manifest, flags, the AWS environment (credentials, region, expired token)


class LlmfleetError(Exception):
    """A failure the user can act on from its message alone: no traceback is needed."""

    exit_code: int = EXIT_REFUSED
