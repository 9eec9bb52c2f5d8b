"""The public names are a contract: this test pins them, so adding one is deliberate and
removing or renaming one (which breaks users) cannot happen by accident."""

from __future__ import annotations

from pathlib import Path

import undying

PUBLIC = {
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
}

API_DOC = Path(__file__).parents[2] / "docs" / "api.md"


def test_the_exported_names_are_exactly_the_pinned_ones() -> None:
    assert set(undying.__all__) == PUBLIC
    assert len(undying.__all__) == len(PUBLIC), "a name is listed twice in __all__"


def test_every_exported_name_exists_and_is_documented() -> None:
    doc = API_DOC.read_text()
    for name in PUBLIC:
        assert hasattr(undying, name), name
        assert f"`{name}" in doc or f"undying.{name}" in doc, f"{name} is not in docs/api.md"


def test_errors_share_one_root_but_cancellation() -> None:
    for name in PUBLIC:
        obj = getattr(undying, name)
        exception = isinstance(obj, type) and issubclass(obj, BaseException)
        if exception and not issubclass(obj, Warning) and name != "WorkflowCancelled":
            assert issubclass(obj, undying.UndyingError), name
    assert not issubclass(undying.WorkflowCancelled, Exception)
