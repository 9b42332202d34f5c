"""An example of insurers' own formula functions for tiv, published as a plugin.

Install this folder (`pip install ./examples/functions`) and tiv finds the functions
through the `tiv.functions` entry point; or pass them to `load_rules(functions=...)`.
A pack then calls them like built-ins: `chargeable_weight_kg(weight, volume, 6000)`.
"""

from __future__ import annotations

from decimal import Decimal

from engine import custom_function


@custom_function(
    "chargeable_weight_kg",
    "1.0.0",
    args=["number", "number", "number"],
    returns="number",
    description="chargeable_weight_kg(actual_kg, volume_cm3, divisor): the greater of the "
    "actual weight and the volumetric weight (volume ÷ divisor; air cargo uses 6000)",
)
def chargeable_weight_kg(actual_kg: Decimal, volume_cm3: Decimal, divisor: Decimal) -> Decimal:
    # Pure: the same three numbers always give the same weight, and nothing is read or written.
    return max(actual_kg, volume_cm3 / divisor)


FUNCTIONS = [chargeable_weight_kg]
