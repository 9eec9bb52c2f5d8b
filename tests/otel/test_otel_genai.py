"""Model calls annotated from a step become GenAI semantic-convention attributes."""

from __future__ import annotations

import asyncio
import warnings

from conftest import Traced, attrs, short

import undying
from undying import Context, observe
from undying.otel import GENAI_ATTRIBUTES
from undying.testing import temp_app

model_calls: list[int] = []


@undying.step(retries=1, retry_delay=0.0)
async def ask_model(prompt: str) -> str:
    """Two model calls in one attempt (a tool loop, say); the first attempt fails after them."""
    model_calls.append(1)
    for turn in range(2):
        observe.annotate(
            provider="openai",
            operation="chat",
            model="gpt-4o",
            response_model="gpt-4o-2024-08-06",
            response_id=f"chatcmpl-{turn}",
            finish_reasons=["stop"],
            temperature=0.2,
            max_tokens=256,
            input_tokens=100,
            output_tokens=20,
            cached_tokens=64,
            cache_write_tokens=0,
            customer="acme",
            **{"app.prompt.version": 3},
        )
    if len(model_calls) == 1:
        raise TimeoutError("the model timed out")
    return prompt.upper()


def test_model_call_annotations_become_genai_attributes(traced: Traced, db_path: str) -> None:
    model_calls.clear()
    app = temp_app(db_path)

    @app.workflow(name="chat")
    async def chat(ctx: Context) -> str:
        observe.annotate(customer="acme")  # workflow code: on the execution's span
        return await ask_model("hi")

    async def main() -> str:
        async with app:
            return str(await (await app.start("chat", run_id="c")).result(timeout=10))

    assert asyncio.run(main()) == "HI"
    first, second = traced.steps()
    assert [short(s.name) for s in (first, second)] == ["ask_model", "ask_model"]
    for span in (first, second):  # each attempt has its own calls' attributes and counts
        got = attrs(span)
        assert {k: v for k, v in got.items() if k.startswith("gen_ai.")} == {
            "gen_ai.provider.name": "openai",
            "gen_ai.system": "openai",
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.response.model": "gpt-4o-2024-08-06",
            "gen_ai.response.id": "chatcmpl-1",
            "gen_ai.response.finish_reasons": ("stop",),
            "gen_ai.request.temperature": 0.2,
            "gen_ai.request.max_tokens": 256,
            "gen_ai.usage.input_tokens": 200,  # the two calls add up
            "gen_ai.usage.output_tokens": 40,
            "gen_ai.usage.cache_read.input_tokens": 128,
            "gen_ai.usage.cache_creation.input_tokens": 0,
        }
        assert got["undying.annotation.customer"] == "acme"
        assert got["app.prompt.version"] == 3
    [run] = traced.runs()
    assert attrs(run)["undying.annotation.customer"] == "acme"
    assert not any(k.startswith("gen_ai.") for k in attrs(run))


def test_annotate_outside_any_run_does_nothing(traced: Traced) -> None:
    observe.annotate(model="m", input_tokens=1)
    assert traced.spans() == []


def test_annotate_takes_odd_values_as_strings(traced: Traced, db_path: str) -> None:
    app = temp_app(db_path)

    @undying.step
    async def odd() -> None:
        observe.annotate(
            usage={"input": 3}, model=None, input_tokens="12", mixed=[1, "a"], raw=b"\x00"
        )

    @app.workflow(name="odd")
    async def wf(ctx: Context) -> None:
        await odd()

    async def main() -> None:
        async with app:
            await (await app.start("odd", run_id="o")).result(timeout=10)

    asyncio.run(main())
    [step] = traced.steps()
    got = attrs(step)
    assert got["undying.annotation.usage"] == "{'input': 3}"
    assert "gen_ai.request.model" not in got  # None: not known, not set
    assert got["gen_ai.usage.input_tokens"] == "12"  # not a number: not added up, kept as given
    assert got["undying.annotation.mixed"] == "[1, 'a']"
    assert got["undying.annotation.raw"] == "b'\\x00'"


def test_the_keys_and_names_match_the_semantic_conventions() -> None:
    """Each name is the one the installed opentelemetry-semantic-conventions defines (its
    GenAI constants are marked as moved to the GenAI conventions repository, not renamed)."""
    assert tuple(GENAI_ATTRIBUTES) == observe.MODEL_CALL_KEYS
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as semconv

    defined = {getattr(semconv, name) for name in dir(semconv) if name.startswith("GEN_AI_")}
    used = {name for names in GENAI_ATTRIBUTES.values() for name in names}
    assert used <= defined, used - defined
    assert GENAI_ATTRIBUTES["provider"] == (semconv.GEN_AI_PROVIDER_NAME, semconv.GEN_AI_SYSTEM)
    assert GENAI_ATTRIBUTES["input_tokens"] == (semconv.GEN_AI_USAGE_INPUT_TOKENS,)
    assert GENAI_ATTRIBUTES["output_tokens"] == (semconv.GEN_AI_USAGE_OUTPUT_TOKENS,)
    assert GENAI_ATTRIBUTES["model"] == (semconv.GEN_AI_REQUEST_MODEL,)
    assert GENAI_ATTRIBUTES["response_model"] == (semconv.GEN_AI_RESPONSE_MODEL,)
    assert GENAI_ATTRIBUTES["operation"] == (semconv.GEN_AI_OPERATION_NAME,)
