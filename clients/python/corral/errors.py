"""Exceptions the client raises: one class per gRPC status the daemon answers with."""
from __future__ import annotations

from typing import Optional

import grpc


class CorralError(Exception):
    """A call the daemon refused or that could not reach it. ``code`` is the gRPC status."""

    def __init__(self, message: str, code: Optional[grpc.StatusCode] = None, exit_code: Optional[int] = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        #: The exit code `corral` would give the same refusal (the ``corral-exit-code`` trailer), if sent.
        self.exit_code = exit_code


class InvalidArgumentError(CorralError):
    """Bad input (INVALID_ARGUMENT): nothing was created."""


class NotFoundError(CorralError):
    """No such sandbox, exec or image (NOT_FOUND)."""


class AlreadyExistsError(CorralError):
    """The name is in use (ALREADY_EXISTS)."""


class FailedPreconditionError(CorralError):
    """Not in a state for this call, e.g. exec into an ended sandbox (FAILED_PRECONDITION)."""


class ResourceExhaustedError(CorralError):
    """The sandbox does not fit in the daemon's capacity (RESOURCE_EXHAUSTED)."""


class UnauthenticatedError(CorralError):
    """TCP without the right bearer token (UNAUTHENTICATED)."""


class UnavailableError(CorralError):
    """The daemon cannot be reached or is shutting down (UNAVAILABLE)."""


_BY_CODE = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
}


def from_rpc_error(error: grpc.RpcError) -> CorralError:
    """The client's exception for a gRPC error."""
    code = error.code() if hasattr(error, "code") else None
    details = error.details() if hasattr(error, "details") else str(error)
    exit_code = None
    trailers = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    for key, value in trailers or ():
        if key == "corral-exit-code":
            try:
                exit_code = int(value)
            except ValueError:
                pass
    cls = _BY_CODE.get(code, CorralError)
    return cls(details or str(code), code, exit_code)
