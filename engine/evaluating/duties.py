"""Estimate import duties, taxes and fees from the destination's country rules.

In: the destination's `CompiledCountry` (and its customs union's), the shipment, the
FOB value and international freight the pack computed (valuation currency), a tracer.
Out: a `DutyEstimate` with every line (duty per goods line, additional duties, each
tax and fee, de minimis reliefs) citing its rule file line, and its total in the
valuation currency. Nothing is rounded here but what the country file says: a tax or
fee with `rounding` is rounded as the authority states it (US MPF and HMF to the cent),
in the country's currency; the pack rounds the rest where it says.

Order: insurance (the basis' rate) -> customs value (FOB, or FOB + freight +
insurance) -> de minimis (first matching entry per kind) -> duty per goods line
(customs value shared by goods value; longest HS prefix, else the default rate) ->
additional duties by origin -> fees (rate of a base, clamped to min/max) -> taxes in
file order, each base a formula that may read earlier taxes.
Amounts in the country's currency (thresholds, fee limits) are converted with the
shipment's `fx`; a missing rate is an error, never 1:1.

This estimates duties for insurance valuation; it is not a customs declaration.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from engine.compiling.country import CompiledCountry, Located
from engine.errors import EvaluationError, Location, Problem
from engine.explaining.trace import Tracer
from engine.facts import Shipment
from engine.money import exact, plain, round_to
from engine.result import DutyEstimate, DutyLine, Flag, RuleRef, built
from engine.schema.models import AmountRounding


class DutyEstimator:
    """One per valuation: formulas call `estimate` through `estimate_duties(fob, freight)`.

    `shipment` may be a function making it: the plain road (valuation.evaluate_plain)
    builds a `Shipment` only for a valuation whose duties are estimated."""

    def __init__(
        self,
        shipment: Shipment | Callable[[], Shipment],
        country: CompiledCountry | None,
        union: CompiledCountry | None,
        tracer: Tracer,
    ) -> None:
        self._shipment = shipment
        self.country = country
        self.union = union
        self.tracer = tracer
        self.result: DutyEstimate | None = None
        self.flags: list[Flag] = []

    @property
    def shipment(self) -> Shipment:
        given = self._shipment
        if not isinstance(given, Shipment):
            given = self._shipment = given()
        return given

    @property
    def available(self) -> bool:
        return self.country is not None

    def estimate(self, fob: Decimal, freight: Decimal) -> Decimal:
        if self.country is None:
            raise EvaluationError(
                Problem(
                    "duties.no_country_rules",
                    f"no duty rules for destination "
                    f"{self.shipment.destination.country} in effect on {self.shipment.date}: add "
                    f"rules/countries/{self.shipment.destination.country}/, declare the duties, "
                    "or let the policy proceed without them (test duty_rules.available)",
                    Location(path="destination.country"),
                )
            )
        if self.result is not None:  # a pack may read it twice; estimate once
            return self.result.total
        self.result = _Estimate(self, fob, freight).run()
        return self.result.total


class _Estimate:
    def __init__(self, owner: DutyEstimator, fob: Decimal, freight: Decimal) -> None:
        assert owner.country is not None
        self.owner = owner
        self.shipment = owner.shipment
        self.member = owner.country
        self.customs = owner.union or owner.country
        self.tracer = owner.tracer
        self.fob, self.freight = fob, freight
        self.day: datetime.date = owner.shipment.date
        self.lines: list[DutyLine] = []
        self.decided: set[str] = set()  # de minimis kinds whose first matching entry was seen

    # --- helpers -------------------------------------------------------------------
    def to_valuation(self, amount: Decimal, currency: str, what: str, where: Location) -> Decimal:
        if currency == self.shipment.currency:
            return amount
        rate = self.shipment.fx.get(currency)
        if rate is None:
            raise EvaluationError(
                Problem(
                    "fx.missing",
                    f"{what} is in {currency}; add fx.{currency} (the value of one "
                    f"{currency} in {self.shipment.currency}) to the shipment",
                    where,
                )
            )
        return amount * rate

    def as_stated(
        self, amount: Decimal, rounding: AmountRounding | None, what: str, where: Location
    ) -> tuple[Decimal, str]:
        """`amount` (valuation currency) rounded as the country file says, and a note.

        The authority states the amount in its own currency, so that is where it is
        rounded: an amount in another valuation currency is converted at the shipment's
        fx, rounded there, and converted back.
        """
        if rounding is None:
            return amount, ""
        currency = self.member.currency
        note = f"rounded to {plain(Decimal(1).scaleb(-rounding.places))} {currency}"
        if currency == self.shipment.currency:
            return round_to(amount, rounding.places, rounding.mode), note
        rate = self.to_valuation(Decimal(1), currency, what, where)
        with exact():
            stated = round_to(amount / rate, rounding.places, rounding.mode)
            return stated * rate, note

    def line(
        self,
        item_id: str,
        kind: str,
        name: str,
        subject: str,
        base: Decimal,
        rate: Decimal,
        amount: Decimal,
        where: Location,
        citation: str,
        note: str = "",
    ) -> Decimal:
        self.lines.append(
            built(
                DutyLine,
                id=item_id,
                kind=kind,
                name=name,
                subject=subject,
                base=base,
                rate=rate,
                amount=amount,
                note=note,
                source=where.source,
                citation=citation,
            )
        )
        if self.tracer.enabled:
            self.tracer.step(
                "duty",
                f"{item_id} {subject}",
                f"{name}: base × {plain(rate)}" + (f" ({note})" if note else ""),
                {"base": base, "rate": rate},
                amount,
                where.source,
            )
        return amount

    def step(
        self, name: str, expression: str, inputs: Mapping[str, Any], value: Decimal, where: Location
    ) -> None:
        if self.tracer.enabled:
            self.tracer.step("duty", name, expression, inputs, value, where.source)

    def matches(self, item: Any) -> bool:
        # The fields of the item's model, where it has them: a model without one would
        # raise (and catch) AttributeError in getattr, a microsecond each time.
        fields = item.__dict__
        origins = fields.get("origins")
        excluded = fields.get("exclude_origins") or ()
        modes = fields.get("modes")
        origin = self.shipment.origin.country
        return (
            item.in_effect(self.day)
            and (origins is None or origin in origins)
            and origin not in excluded
            and (modes is None or self.shipment.mode in modes)
        )

    # --- the estimate ----------------------------------------------------------------
    def run(self) -> DutyEstimate:
        basis_entry = self.customs.basis
        if basis_entry is None or self.customs.default_rate is None:
            # Validation requires both of a country without a customs union, and of every
            # union; a member valued without its union's rules would come here.
            raise EvaluationError(
                Problem(
                    "duties.no_basis",
                    f"{self.customs.ref} gives no valuation basis or default duty rate: "
                    "it takes them from its customs union, whose rules are not in effect "
                    f"on {self.day}",
                    self.customs.where,
                )
            )
        basis = basis_entry.item
        insurance = Decimal(0)
        if basis.insurance_rate is not None:
            of_freight = basis.insurance_base == "fob_and_freight"
            insurance = (self.fob + (self.freight if of_freight else 0)) * basis.insurance_rate
            self.step(
                "insurance",
                f"({'fob + freight' if of_freight else 'fob'}) × {plain(basis.insurance_rate)}",
                {"fob": self.fob, "freight": self.freight},
                insurance,
                basis_entry.where,
            )
        customs_value = self.fob
        if basis.basis == "CIF":
            customs_value = self.fob + self.freight + insurance
        self.step(
            "customs_value",
            "fob" if basis.basis == "FOB" else "fob + freight + insurance",
            {"fob": self.fob, "freight": self.freight, "insurance": insurance},
            customs_value,
            basis_entry.where,
        )

        relief = self.de_minimis(customs_value)
        duty = self.duties(customs_value, relief.get("duty"))
        if "duty" not in relief:
            waiver = self.duty_waiver(duty)
            if waiver is not None:  # the duty is too small to collect: work it out again
                relief["duty"] = waiver
                self.lines = [x for x in self.lines if x.kind not in ("duty", "additional_duty")]
                duty = self.duties(customs_value, waiver)
        names = {
            "customs_value": customs_value,
            "fob": self.fob,
            "freight": self.freight,
            "insurance": insurance,
            "cif": self.fob + self.freight + insurance,
            "duty": duty,
        }
        fees = self.fees(names, duty_relief="duty" in relief)
        names["fees"] = fees
        taxes = self.taxes(names, relief.get("tax"))
        total = duty + fees + taxes
        self.step(
            "duties_total",
            "duty + fees + taxes",
            {"duty": duty, "fees": fees, "taxes": taxes},
            total,
            self.member.where,
        )
        rules = [self.member] + ([self.customs] if self.customs is not self.member else [])
        # `built`: every figure here is the engine's own Decimal, nothing to validate.
        return built(
            DutyEstimate,
            country=self.member.id,
            rules=[
                built(RuleRef, id=r.id, version=r.version, sha256=r.sha256, source=r.source)
                for r in rules
            ],
            basis=basis.basis,
            country_currency=self.member.currency,
            fob=self.fob,
            freight=self.freight,
            insurance=insurance,
            customs_value=customs_value,
            de_minimis_applied=list(dict.fromkeys(e.item.id for e in relief.values())),
            lines=list(self.lines),
            total=total,
        )

    def _reliefs(self, measure: str) -> list[Located]:
        """De minimis entries measured on `measure` that apply here: union's, then member's."""
        entries = [
            *(self.customs.de_minimis if self.customs is not self.member else ()),
            *self.member.de_minimis,
        ]
        return [e for e in entries if e.item.measure == measure and self.matches(e.item)]

    def _under(self, entry: Located, label: str, amount: Decimal) -> bool:
        """Whether `amount` is at or below the entry's threshold; a traced step either way."""
        item = entry.item
        threshold = self.to_valuation(
            item.threshold, item.currency, f"the de minimis threshold {item.id}", entry.where
        )
        applies = amount <= threshold
        self.step(
            f"de_minimis {item.id}",
            f"{label} ≤ {plain(item.threshold)} {item.currency}",
            {label.replace(" ", "_"): amount, "threshold": threshold},
            Decimal(int(applies)),
            entry.where,
        )
        return applies

    def de_minimis(self, customs_value: Decimal) -> dict[str, Located]:
        """The relief that applies for "duty" and for "tax" (first matching entry per kind)."""
        chosen: dict[str, Located] = {}
        for entry in self._reliefs("customs_value"):
            item = entry.item
            kinds = ["duty", "tax"] if item.applies_to == "duty_and_tax" else [item.applies_to]
            if all(k in self.decided for k in kinds):
                continue
            applies = self._under(entry, "customs value", customs_value)
            for kind in kinds:
                if kind not in self.decided:
                    self.decided.add(kind)
                    if applies:
                        chosen[kind] = entry
        return chosen

    def duty_waiver(self, duty: Decimal) -> Located | None:
        """A threshold on the duty itself: the first such entry, if the duty is under it."""
        entries = self._reliefs("duty")
        if duty <= 0 or not entries:
            return None
        return entries[0] if self._under(entries[0], "duty", duty) else None

    def duties(self, customs_value: Decimal, relief: Located | None) -> Decimal:
        shares = self.shares(customs_value)
        default = self.customs.default_rate
        assert default is not None
        total = Decimal(0)
        for subject, hs_code, share in shares:
            entry = self.customs.rate_for(hs_code)
            if entry is not None:
                rate, where, citation = entry.item.rate, entry.where, entry.item.source
                note = f"HS {entry.item.hs}"
            else:
                rate, where, citation = (
                    default.item.default_rate,
                    default.where,
                    default.item.default_source,
                )
                note = "default rate" + ("" if hs_code else ": no hs_code")
                if not hs_code:
                    missing = built(
                        Flag,
                        name="hs_code_missing",
                        rule=f"{self.customs.id}.duty.default_rate",
                        reason="a goods line has no hs_code, so the default duty rate was used",
                        source=where.source,
                        citation=None,
                        subjects=[subject],
                    )
                    if missing not in self.owner.flags:
                        self.owner.flags.append(missing)
            replaced = relief is not None and (
                relief.item.duty_rate is not None or relief.item.flat_duty_per_line is not None
            )
            if replaced:  # a small-consignment scheme: its own duty instead of the tariff's
                assert relief is not None
                item = relief.item
                if item.duty_rate is not None:
                    kind, scheme_rate, amount = (
                        "flat-rate duty",
                        item.duty_rate,
                        share * item.duty_rate,
                    )
                else:
                    kind, scheme_rate = "flat duty", Decimal(0)
                    amount = self.to_valuation(
                        item.flat_duty_per_line,
                        self.customs.currency,
                        f"the flat duty of {item.id}",
                        relief.where,
                    )
                total += self.line(
                    item.id,
                    "duty",
                    f"{kind} under de minimis",
                    subject,
                    share,
                    scheme_rate,
                    amount,
                    relief.where,
                    item.source,
                    "replaces the duty",
                )
                continue
            if relief is not None:
                amount, note = Decimal(0), f"{note}; relieved by de minimis {relief.item.id}"
            else:
                amount = share * rate
            total += self.line(
                "duty", "duty", "import duty", subject, share, rate, amount, where, citation, note
            )
            if relief is not None:
                continue  # relief covers the additional duties too
            for extra in self.customs.additional:
                item = extra.item
                if not self.matches(item):
                    continue
                if item.hs is not None and not (
                    hs_code and any(hs_code.startswith(p) for p in item.hs)
                ):
                    continue
                total += self.line(
                    item.id,
                    "additional_duty",
                    item.description,
                    subject,
                    share,
                    item.rate,
                    share * item.rate,
                    extra.where,
                    item.source,
                )
        return total

    def shares(self, customs_value: Decimal) -> list[tuple[str, str | None, Decimal]]:
        """Split the customs value over goods lines in proportion to their values."""
        goods = self.shipment.goods
        if not goods:
            return [("shipment", None, customs_value)]
        if len(goods) == 1:
            return [("goods[0]", goods[0].hs_code, customs_value)]
        values = []
        for index, item in enumerate(goods):
            if item.value is None:
                raise EvaluationError(
                    Problem(
                        "duties.goods_value",
                        "to share the customs value across goods lines every line needs a value",
                        Location(path=f"goods[{index}].value"),
                    )
                )
            values.append(
                self.to_valuation(
                    item.value,
                    item.currency or self.shipment.currency,
                    f"goods[{index}].value",
                    Location(path=f"goods[{index}].value"),
                )
            )
        whole = sum(values, Decimal(0))
        if whole == 0:
            raise EvaluationError(
                Problem(
                    "duties.goods_value",
                    "the goods lines' values add up to zero; cannot share the customs value",
                    Location(path="goods"),
                )
            )
        return [
            (f"goods[{i}]", item.hs_code, customs_value * value / whole)
            for i, (item, value) in enumerate(zip(goods, values, strict=True))
        ]

    def fees(self, names: dict[str, Decimal], duty_relief: bool) -> Decimal:
        total = Decimal(0)
        sources = [
            *(self.customs.fees if self.customs is not self.member else ()),
            *self.member.fees,
        ]
        for charged in sources:
            fee = charged.item
            if not self.matches(fee):
                continue
            base = charged.base.run(names)
            if duty_relief and getattr(fee, "waived_under_de_minimis", False):
                total += self.line(
                    fee.id,
                    "fee",
                    fee.name,
                    "shipment",
                    base,
                    fee.rate,
                    Decimal(0),
                    charged.where,
                    fee.source,
                    "waived: de minimis",
                )
                continue
            amount, note = base * fee.rate, ""
            minimum: Decimal | None = getattr(fee, "minimum", None)  # sources are fees
            maximum: Decimal | None = getattr(fee, "maximum", None)
            if minimum is not None:
                low = self.to_valuation(
                    minimum, self.member.currency, f"the minimum of {fee.id}", charged.where
                )
                if amount < low:
                    amount, note = low, f"minimum {plain(minimum)} {self.member.currency}"
            if maximum is not None:
                high = self.to_valuation(
                    maximum, self.member.currency, f"the maximum of {fee.id}", charged.where
                )
                if amount > high:
                    amount, note = high, f"maximum {plain(maximum)} {self.member.currency}"
            amount, stated = self.as_stated(
                amount, getattr(fee, "rounding", None), f"fee {fee.id}", charged.where
            )
            note = "; ".join(part for part in (note, stated) if part)
            total += self.line(
                fee.id,
                "fee",
                fee.name,
                "shipment",
                base,
                fee.rate,
                amount,
                charged.where,
                fee.source,
                note,
            )
        return total

    def taxes(self, names: dict[str, Decimal], relief: Located | None) -> Decimal:
        total = Decimal(0)
        for charged in self.member.taxes:
            tax = charged.item
            if not tax.in_effect(self.day):
                continue
            base = charged.base.run(names)
            only = relief.item.relieves_taxes if relief is not None else None
            tax_relief = relief is not None and (only is None or tax.id in only)
            amount, note = Decimal(0), "relieved by de minimis"
            if not tax_relief:
                amount, note = self.as_stated(
                    base * tax.rate, getattr(tax, "rounding", None), f"tax {tax.id}", charged.where
                )
            total += self.line(
                tax.id,
                "tax",
                tax.name,
                "shipment",
                base,
                tax.rate,
                amount,
                charged.where,
                tax.source,
                note,
            )
            names[tax.id] = amount
        return total
