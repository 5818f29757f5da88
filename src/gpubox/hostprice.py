"""What a local or ssh box costs its user per hour, which only they know.

An AWS box's price comes from AWS's price list; a host you rent elsewhere, or this
machine, has the price you give it (`gpubox up NAME --price 0.35`, or later
`gpubox price NAME 0.35`), 0 for a machine that costs you nothing. It is kept with the
box's record (forgotten with `gpubox down`), shown by `status`, and used by
`bench compare` to rank the box beside cloud types in $ per unit of work.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gpubox.errors import InvalidInput
from gpubox.providers.base import Box

if TYPE_CHECKING:
    from gpubox.config import Settings
    from gpubox.state import State


def set_price(settings: Settings, state: State, name: str, price_per_hour: float | str) -> list[Box]:
    """Give box `name` (every node of it, for a box of several machines) this $/h."""
    from gpubox.box import find_box
    from gpubox.validate import parse_price

    price = parse_price(price_per_hour, "")
    prov, box = find_box(settings, state, name)
    if not hasattr(prov, "set_price"):
        raise InvalidInput(
            f"'{name}' is an {box.provider.upper()} box: its price comes from AWS's price list",
            hint="prices are for ssh and local boxes, which only you know the cost of",
        )
    nodes = [box] + [b for b in prov.list() if b.get("cluster") == name and b.name != name]
    done = []
    for node in nodes:
        priced = prov.set_price(node, price)
        state.remember(priced)
        done.append(priced)
    return done
