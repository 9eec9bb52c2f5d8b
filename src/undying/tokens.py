"""A run's model tokens as the API reports them (``App.token_usage``).

The figures come from the ``usage`` table, which ``undying.llm`` writes (see
``undying/llm/usage.py`` for how spent and saved tokens are counted); this module only adds
them up, so the App can report them without depending on the model adapters.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .store.base import SAVED, ReadSide, UsageTotal


@dataclass(frozen=True, slots=True)
class Tokens:
    """A number of model calls and the tokens they used."""

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0  # part of input_tokens served from the provider's prompt cache

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Tokens) -> Tokens:
        return Tokens(
            self.calls + other.calls,
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cached_tokens + other.cached_tokens,
        )


@dataclass(frozen=True, slots=True)
class ModelTokens:
    """What one provider's model spent in a run."""

    provider: str
    model: str
    spent: Tokens


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """A run's model tokens (``await app.token_usage(run_id)``).

    ``spent``: every call attempt that reached a provider, in all executions of the run.
    ``failed``: the part of ``spent`` that bought no recorded answer: failed attempts, streams
    cut mid-way, and attempts still streaming when their worker died (``open``: counted with
    what the provider had reported by then).
    ``saved``: calls that replay answered from the journal instead of paying for them again.
    """

    spent: Tokens = Tokens()
    failed: Tokens = Tokens()
    saved: Tokens = Tokens()
    by_model: tuple[ModelTokens, ...] = ()

    @classmethod
    def from_totals(cls, totals: Iterable[UsageTotal]) -> TokenUsage:
        spent = failed = saved = Tokens()
        models: dict[tuple[str, str], Tokens] = {}
        for t in totals:
            tokens = Tokens(t.calls, t.input_tokens, t.output_tokens, t.cached_tokens)
            if t.kind == SAVED:
                saved += tokens
                continue
            spent += tokens
            if t.outcome != "ok":
                failed += tokens
            key = (t.provider, t.model)
            models[key] = models.get(key, Tokens()) + tokens
        by_model = tuple(ModelTokens(p, m, tok) for (p, m), tok in sorted(models.items()))
        return cls(spent, failed, saved, by_model)


async def load_token_usage(store: ReadSide, run_id: str) -> TokenUsage:
    return TokenUsage.from_totals(await store.load_usage(run_id))


