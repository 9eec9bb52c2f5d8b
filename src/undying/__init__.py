"""undying: crash-proof long-running AI agents.

An agent is plain async Python; every side effect goes through a journaled call, so after a
crash any worker re-runs the code and every completed call returns its recorded result.
"""

from __future__ import annotations

from .app import App, RunHandle
from .context import ArgumentDigestChanged, ChildHandle, Context
from .errors import (
    EventTimeout,
    InvalidArgument,
    LeaseLost,
    NonDeterminismError,
    RunNotFound,
    SerializationError,
    StepFailed,
    StepInDoubt,
    StoreError,
    UndyingError,
    UnknownWorkflow,
    WorkflowCancelled,
    WorkflowFailed,
)
from .steps import StepInfo, current_step, idempotency_key, in_workflow, step
from .steps import workflow_context as current_context

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
    "SerializationError",
    "StepFailed",
    "StepInDoubt",
    "StepInfo",
    "StoreError",
    "UndyingError",
    "UnknownWorkflow",
    "WorkflowCancelled",
    "WorkflowFailed",
    "__version__",
    "current_context",
    "current_step",
    "idempotency_key",
    "in_workflow",
    "step",
]
