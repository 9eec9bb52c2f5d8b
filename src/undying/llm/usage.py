"""Token accounting: what a run spent on model calls, and what replay saved it.

Every attempt that reaches a provider writes one usage row (``spent``), whether it succeeded,
failed or was cut mid-stream, so the totals are what the provider billed as far as the
provider told us. A call that replay answers from the journal costs nothing; its recorded
tokens are added up as ``saved``. Saved tokens are not written one row per replayed call per
recovery: the calls replayed in one burst (a recovery replays everything before the first
live call without waiting on anything real) are summed in memory and written as one row per
model, after the burst, by a task of its own.

Rows are written outside the journal and unfenced: tokens a worker spent before it lost its
lease were spent all the same. A failure to write a usage row is logged and never fails the
model call: accounting must not break an agent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..store.base import SAVED, SPENT, UsageRow
from ..tokens import ModelTokens, Tokens, TokenUsage, load_token_usage

if TYPE_CHECKING:
    from ..context import Context
    from ..store.base import RunJournal

__all__ = ["ModelTokens", "TokenUsage", "Tokens", "load_token_usage", "usage_lines"]

log = logging.getLogger("undying.llm")


def usage_lines(usage: TokenUsage) -> list[str]:
    """``undying show``'s lines about tokens (none for a run that made no model call)."""
    if not usage.spent.calls and not usage.saved.calls:
        return []
    lines = [f"tokens    spent {_tokens(usage.spent)}"]
    if usage.failed.calls:
        lines.append(f"          of which failed or cut {_tokens(usage.failed)}")
    if usage.saved.calls:
        lines.append(f"          saved by replay {_tokens(usage.saved)}")
    for m in usage.by_model:
        lines.append(f"          {m.provider} {m.model}: {_tokens(m.spent)}")
    return lines


def _tokens(t: Tokens) -> str:
    cached = f" ({t.cached_tokens} cached)" if t.cached_tokens else ""
    return f"{t.input_tokens} in{cached} + {t.output_tokens} out in {t.calls} call(s)"


# -- writing ------------------------------------------------------------------------------


async def write_rows(store: RunJournal, rows: list[UsageRow]) -> None:
    try:
        await store.add_usage(rows)
    except Exception as exc:  # accounting must never fail the call it accounts
        log.warning("could not record token usage of run %r: %s", rows[0].run_id, exc)


@dataclass(frozen=True, slots=True)
class CallSite:
    """Where a model call sits: enough to key its usage rows."""

    store: RunJournal
    run_id: str
    generation: int
    epoch: int


def call_site(ctx: Context) -> CallSite:
    return CallSite(ctx._rec.store, ctx.run_id, ctx.generation, ctx.epoch)


def spent_row(
    site: CallSite,
    seq: int,
    attempt: int,
    provider: str,
    model: str,
    outcome: str,
    usage: Mapping[str, int] | None,
) -> UsageRow:
    u = usage or {}
    return UsageRow(
        site.run_id,
        site.generation,
        seq,
        site.epoch,
        attempt,
        SPENT,
        provider,
        model,
        outcome,
        1,
        int(u.get("input", 0)),
        int(u.get("output", 0)),
        int(u.get("cached", 0)),
        time.time(),
    )


class _SavedBurst:
    """Saved tokens of one execution of a run not written yet, per (provider, model).

    One row per model and execution (position -1); each write adds its counts to that row
    (saved rows are additive in ``Store.add_usage``), so calls replayed before the write task
    runs share its write, and nothing needs to stay in memory after it. Measured in
    tests/llm/test_token_usage.py: a fork replaying 21 calls of two models adds two rows."""

    def __init__(self, key: tuple[int, str, int, int], site: CallSite) -> None:
        self.key = key
        self.site = site
        self.tokens: dict[tuple[str, str], Tokens] = {}
        self.task: asyncio.Task[None] | None = None

    def add(self, provider: str, model: str, usage: Mapping[str, int]) -> None:
        key = (provider, model)
        got = Tokens(1, usage.get("input", 0), usage.get("output", 0), usage.get("cached", 0))
        self.tokens[key] = self.tokens.get(key, Tokens()) + got
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        await asyncio.sleep(0)  # calls replayed before this task runs share its write
        try:
            while self.tokens:
                tokens, self.tokens = self.tokens, {}
                site = self.site
                rows = [
                    UsageRow(
                        site.run_id, site.generation, -1, site.epoch, 0, SAVED, provider,
                        model, "saved", t.calls, t.input_tokens, t.output_tokens,
                        t.cached_tokens, time.time(),
                    )
                    for (provider, model), t in tokens.items()
                ]
                await write_rows(site.store, rows)
        finally:
            _bursts.pop(self.key, None)


_bursts: dict[tuple[int, str, int, int], _SavedBurst] = {}


def note_saved(ctx: Context, provider: str, model: str, usage: Mapping[str, Any]) -> None:
    """A call was answered from the journal: count its recorded tokens as saved (not when
    ``replay_check`` re-executes a finished run: that saves nothing, and writes nothing)."""
    if ctx._rec.read_only:
        return
    site = call_site(ctx)
    key = (id(site.store), site.run_id, site.generation, site.epoch)
    burst = _bursts.get(key)
    if burst is None:
        burst = _bursts[key] = _SavedBurst(key, site)
    burst.add(provider, model, {k: int(v) for k, v in usage.items()})


class UsageRecorder:
    """Accounting for model calls journaled outside ``calls.ModelCall`` (the framework
    integrations): made in workflow code before the step, ``spent`` from inside each attempt,
    ``replayed_if_not_spent`` after the step returned."""

    def __init__(self, ctx: Context, provider: str, model: str) -> None:
        self.ctx = ctx
        self.site = call_site(ctx)
        self.provider = provider
        self.model = model
        self.invoked = False

    async def spent(self, usage: Mapping[str, int] | None, outcome: str = "ok") -> None:
        from ..steps import current_step

        self.invoked = True
        info = current_step()
        seq, attempt = (info.seq, info.attempt) if info is not None else (-1, 1)
        row = spent_row(self.site, seq, attempt, self.provider, self.model, outcome, usage)
        await write_rows(self.site.store, [row])

    def replayed_if_not_spent(self, usage: Mapping[str, Any] | None) -> None:
        if not self.invoked:
            note_saved(self.ctx, self.provider, self.model, usage or {})
