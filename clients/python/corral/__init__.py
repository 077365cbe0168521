"""Corral's Python client: sandboxes on a Corral daemon (``corral serve``) over its gRPC API.

    from corral import Sandbox

    with Sandbox(cpu=1, memory="128Mi", runtime="gvisor").create() as sandbox:
        process = sandbox.process.exec("python3", "-c", "print(6 * 7)")
        process.wait()
        print(process.exit_code, process.stdout.read())
"""
from .client import Client, ExitRecord, OomEvent, OutputStream, Process, Sandbox, parse_size
from .errors import (
    AlreadyExistsError,
    CorralError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
)

__all__ = [
    "AlreadyExistsError",
    "Client",
    "CorralError",
    "ExitRecord",
    "FailedPreconditionError",
    "InvalidArgumentError",
    "NotFoundError",
    "OomEvent",
    "OutputStream",
    "Process",
    "ResourceExhaustedError",
    "Sandbox",
    "UnauthenticatedError",
    "UnavailableError",
    "parse_size",
]
