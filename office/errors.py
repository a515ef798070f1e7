"""Domain errors: raised by services, turned into clear 4xx answers by the API and forms."""

from __future__ import annotations


class DomainError(Exception):
    """A request the office refuses, with a stable machine code and a human message."""

    code = "invalid"
    status_code = 400

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.field = field


class TaskRejected(DomainError):
    code = "task_rejected"


class TaskStateConflict(DomainError):
    """The task is not in a state that allows the action (cancel a finished task...)."""

    code = "task_state_conflict"
    status_code = 409


class NotFound(DomainError):
    code = "not_found"
    status_code = 404


class Forbidden(DomainError):
    """The caller may not do this (an API token used for a role outside its scope...)."""

    code = "permission_denied"
    status_code = 403


class IdempotencyConflict(DomainError):
    """An Idempotency-Key already used for a different request."""

    code = "idempotency_key_reused"
    status_code = 422
