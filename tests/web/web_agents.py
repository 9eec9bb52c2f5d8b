"""Agents the web UI tests run and look at: a research agent of ~20 journaled calls (retries,
a step that fails for good, a large offloaded payload, parallel steps, a child run, a wait for
an approval event), one that fails, and one whose values are hostile HTML.

A worker runs them as ``undying worker web_agents:app`` with $UNDYING_DATABASE_URL set;
tests start runs through ``make_app(url, worker=False)``. ``$WEB_AGENTS_LATENCY`` (seconds,
default 0) makes model calls and tools take time, for screenshots that look like real runs.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import undying
from undying import App, Context

LATENCY = float(os.environ.get("WEB_AGENTS_LATENCY", "0"))
HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
_attempts: dict[str, int] = {}


@dataclass
class Page:
    url: str
    title: str
    text: str
    words: int


async def _work(factor: float) -> None:
    if LATENCY:
        await asyncio.sleep(LATENCY * factor)


@undying.step
async def call_model(prompt: str, turn: int) -> dict[str, Any]:
    await _work(6)
    return {
        "role": "assistant",
        "turn": turn,
        "content": f"Considering: {prompt}",
        "usage": {"input_tokens": 812 + 140 * turn, "output_tokens": 96 + 31 * turn},
    }


@undying.step(retries=3, retry_delay=0.01, backoff=1.0)
async def web_search(query: str) -> list[str]:
    """Flaky like a real search API: the first two attempts of each query time out."""
    await _work(2)
    _attempts[query] = _attempts.get(query, 0) + 1
    if query.endswith("benchmarks") and _attempts[query] < 3:
        raise TimeoutError(f"search API timed out for {query!r}")
    slug = query.replace(" ", "-")
    return [f"https://example.org/{slug}/{i}" for i in range(2)]


@undying.step(retries=2, retry_delay=0.01, backoff=1.0)
async def fetch_page(url: str) -> Page:
    await _work(3)
    if url.endswith("/1") and "benchmarks" in url:
        raise PermissionError(f"403 Forbidden: {url} is behind a paywall")
    paragraphs = 400 if url.endswith("overview/0") else 3
    text = "\n\n".join(
        f"Paragraph {i} of {url}: durable execution journals every side effect, so a crashed "
        f"agent replays its history instead of paying for its model calls again."
        for i in range(paragraphs)
    )
    return Page(url, f"Notes on {url.rsplit('/', 2)[-2]}", text, len(text.split()))


@undying.step
async def take_notes(title: str) -> str:
    await _work(1.5)
    return f"key points of {title}"


async def cite_sources(ctx: Context, urls: list[str]) -> list[str]:
    return [await ctx.step(format_citation, url) for url in urls]


def format_citation(url: str) -> str:
    return f"[{url.rsplit('/', 2)[-2]}] {url}"


async def research(ctx: Context, topic: str) -> dict[str, Any]:
    started = ctx.now()
    ctx.set_status({"phase": "planning", "topic": topic})
    plan = await call_model(f"plan a literature review of {topic}", 0)
    urls: list[str] = []
    for query in (f"{topic} overview", f"{topic} benchmarks", f"{topic} in production"):
        urls += await web_search(query)
    ctx.set_status({"phase": "reading", "pages": len(urls)})
    pages: list[Page] = []
    for url in urls[:5]:
        try:
            pages.append(await fetch_page(url))
        except undying.StepFailed:
            continue  # a paywalled source is skipped, as a real agent would
    notes = await asyncio.gather(*(take_notes(page.title) for page in pages))
    draft = await call_model(f"draft a report from {len(notes)} notes", 1)
    citations = await ctx.call(cite_sources, [page.url for page in pages[:2]])
    ctx.set_status({"phase": "waiting for approval", "draft_words": len(draft["content"])})
    decision = await ctx.wait_for_event("approval", timeout=timedelta(days=2))
    report_id = ctx.uuid4()
    ctx.set_status({"phase": "writing the final report"})
    final = await call_model(f"final report, reviewer said {decision!r}", 2)
    return {
        "topic": topic,
        "plan": plan["content"],
        "approved": decision,
        "report": final["content"],
        "report_id": str(report_id),
        "citations": citations,
        "started": started.isoformat(),
    }


async def nightly_digest(ctx: Context, feeds: list[str]) -> str:
    items = [await ctx.step(format_citation, f"https://{feed}.example/x/1") for feed in feeds]
    ctx.set_status({"phase": "summarizing", "items": len(items)})
    raise ValueError(f"summary of {len(items)} items came back empty: the model refused")


async def many_calls(ctx: Context, n: int) -> int:
    for _ in range(n):
        ctx.random()
    return n


async def hostile(ctx: Context) -> str:
    ctx.set_status(HOSTILE)
    return HOSTILE


@undying.step(retries=1, retry_delay=0)
async def speak(words: list[str]) -> None:
    """Publishes a word, is cut once (its retry publishes again, after a marker), then the
    rest."""
    for word in words:
        await undying.publish("answer", word)
        step = undying.current_step()
        if step is not None and step.attempt == 1:
            raise ConnectionError("the model's stream was cut")


async def chat_answer(ctx: Context) -> str:
    await ctx.publish("progress", {"phase": "answering"})
    await speak(["Hel", "lo"])
    await ctx.close_stream("progress")
    await ctx.wait_for_event("more")
    await ctx.publish("answer", HOSTILE)
    return "answered"


def make_app(url: str | None = None, *, worker: bool = True) -> App:
    app = App(url, worker=worker, suspend_after=0.1, lease_ttl=10.0)
    app.workflow(name="research-agent")(research)
    app.workflow(name="cite-sources")(cite_sources)
    app.workflow(name="nightly-digest")(nightly_digest)
    app.workflow(name="hostile-output")(hostile)
    app.workflow(name="many-calls")(many_calls)
    app.workflow(name="chat-answer")(chat_answer)
    return app


app = make_app()
