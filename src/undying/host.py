"""``RunHost``: what an executing run needs from the process that executes it.

The replay engine does not know about apps or workers. A run asks its host for the few things
only the host can do: resolve a workflow to its registered name, start a child run (which a
worker may execute right here), and tell local clients that the run's published status
changed or that it appended to a stream. The worker implements it; ``replay_check``
implements a read-only one. Kept to this handful of members, the seam is narrow enough that a
test host is a few lines.
"""

from __future__ import annotations

from typing import Any, Protocol


class RunHost(Protocol):
    """Services a run's journal and waits call back into (implemented by the worker)."""

    @property
    def suspend_after(self) -> float:
        """Seconds a wait stays in memory before the run is released."""

    def workflow_name(self, workflow: object) -> str:
        """The registered name of ``workflow`` (a decorated function or a name); raises
        ``UnknownWorkflow`` or ``InvalidArgument``."""

    async def start_child(
        self,
        parent_id: str,
        child_id: str,
        workflow: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        """Create the child run (idempotent on ``child_id``) and start executing it."""

    def status_changed(self, run_id: str, value: Any) -> None:
        """The run published a new status value (``ctx.set_status``)."""

    def streams_changed(self, run_id: str) -> None:
        """The run appended to or closed one of its streams (``ctx.publish``): wake this
        process's readers (other processes learn it from the store)."""
