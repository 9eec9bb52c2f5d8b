"""An agent written as a script: ``python script_agent.py`` starts a run and exits, and
``undying worker script_agent:app`` executes it (both on ``$UNDYING_DATABASE_URL``).

The run's input and its step's result are dataclasses defined here, so both the workflow name and
the class references must name this file as the module ``script_agent``, not ``__main__``.
"""

from __future__ import annotations

import asyncio
import dataclasses

import undying
from undying import App, Context

app = App(worker=False)


@dataclasses.dataclass
class Order:
    item: str
    quantity: int


@dataclasses.dataclass
class Quote:
    order: Order
    cents: int


@undying.step
async def price(order: Order) -> Quote:
    return Quote(order, 250 * order.quantity)


@app.workflow()
async def checkout(ctx: Context, order: Order) -> str:
    quote = await price(order)
    return f"{quote.order.item} x{quote.order.quantity}: {quote.cents} cents"


async def main() -> None:
    async with app:
        handle = await app.start(checkout, Order("tea", 3), run_id="script-run")
    name = checkout.__undying_workflow__  # type: ignore[attr-defined]
    print(f"started {handle.run_id} as {name}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
