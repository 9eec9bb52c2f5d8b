"""undying: crash-proof long-running AI agents.

An agent is plain async Python; every side effect goes through a journaled call, so after a
crash any worker re-runs the code and every completed call returns its recorded result.
"""

from __future__ import annotations

from .app import App, RunHandle
from .context import ChildHandle, Context
from .errors import (
    EventTimeout,
    InvalidArgument,
    LeaseLost,
    NonDeterminismError,
    RunNotFound,
    RunQuarantined,
    SerializationError,
    StepFailed,
    StepInDoubt,
    StoreError,
    StreamClosed,
    UndyingError,
    UnknownWorkflow,
    WorkflowCancelled,
    WorkflowFailed,
)
from .journal import ArgumentDigestChanged
from .known_types import register_type
from .scope import StepInfo
from .steps import current_context, current_step, idempotency_key, in_workflow, publish, step
from .streams import StreamRetry

__version__ = "0.1.0"

__all__ = [
    "App",
    "ArgumentDigestChanged",
    "ChildHandle",
    "Context",
    "EventTimeout",
    "InvalidArgument",
    "LeaseLost",
    "NonDeterminismError",
    "RunHandle",
    "RunNotFound",
    "RunQuarantined",
    "SerializationError",
    "StepFailed",
    "StepInDoubt",
    "StepInfo",
    "StoreError",
    "StreamClosed",
    "StreamRetry",
    "UndyingError",
    "UnknownWorkflow",
    "WorkflowCancelled",
    "WorkflowFailed",
    "__version__",
    "current_context",
    "current_step",
    "idempotency_key",
    "in_workflow",
    "publish",
    "register_type",
    "step",
]
