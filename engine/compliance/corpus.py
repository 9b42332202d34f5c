"""Synthetic shipments for tests, impact analysis and benchmarks: realistic and reproducible.

In: how many (`n`) and a `seed`. Out: an iterator of shipment facts as plain dicts, ready
for `json.dumps` (amounts as decimal strings, dates as ISO strings), each valid against
the shipped reference data and the `standard` pack's charge types.

What they cover: trade lanes by mode (ocean, air, road, rail, courier, multimodal) with
ports, the eleven Incoterms 2020 (under C and D terms the invoice includes the main
carriage), valuation, invoice and charge currencies with the shipment's own fx rates,
including currencies with 0 and 3 decimals (JPY, KRW, VND, CLP; KWD, BHD), charge mixes
with detention and demurrage, goods lines with HS codes and categories of the goods
category vocabulary (a few without either), duties declared, declared as none, or left
out to be estimated from country rules (only towards `estimate_in`, destinations that
have them), and some shipments with a sum insured.

Determinism: shipment `i` depends only on (`seed`, `i`), drawn from its own
`random.Random`, so `generate(10, s)` is the first ten of `generate(1000, s)` and any
slice can be generated alone. Amounts are built from integers and Decimal, never floats.

The lanes, prices and exchange rates below are sample data for making test shipments,
not rules: nothing here takes part in valuing real facts.
"""

from __future__ import annotations

import bisect
import datetime
import itertools
import random
from collections.abc import Collection, Iterator, Sequence
from decimal import Decimal, localcontext
from typing import Any, TypeVar

from engine.money import plain

T = TypeVar("T")

START = datetime.date(2025, 1, 1)
DAYS = 365

# Units of each currency per US dollar (approximate, late 2024), and its ISO minor units.
PER_USD: dict[str, tuple[str, int]] = {
    "USD": ("1", 2),
    "EUR": ("0.92", 2),
    "GBP": ("0.79", 2),
    "JPY": ("151", 0),
    "CNY": ("7.2", 2),
    "SGD": ("1.35", 2),
    "CHF": ("0.88", 2),
    "INR": ("83.3", 2),
    "KRW": ("1350", 0),
    "BRL": ("5.0", 2),
    "MXN": ("17.5", 2),
    "AUD": ("1.52", 2),
    "CAD": ("1.36", 2),
    "HKD": ("7.8", 2),
    "VND": ("25000", 0),
    "CLP": ("950", 0),
    "KWD": ("0.307", 3),
    "BHD": ("0.376", 3),
    "PLN": ("4.0", 2),
    "CZK": ("23.0", 2),
    "THB": ("35.5", 2),
    "TRY": ("32.0", 2),
}

# Country -> (currency it invoices or values in, ocean ports, airports).
COUNTRIES: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "US": ("USD", ("USLAX", "USLGB", "USNYC", "USSAV", "USHOU"), ("USJFK", "USORD", "USLAX")),
    "CN": ("CNY", ("CNSHA", "CNSZX", "CNNGB", "CNTAO"), ("CNPVG", "CNCAN")),
    "DE": ("EUR", ("DEHAM", "DEBRV"), ("DEFRA", "DEMUC")),
    "NL": ("EUR", ("NLRTM",), ("NLAMS",)),
    "FR": ("EUR", ("FRLEH", "FRMRS"), ("FRCDG",)),
    "ES": ("EUR", ("ESVLC", "ESALG"), ("ESMAD",)),
    "IT": ("EUR", ("ITGOA",), ("ITMXP",)),
    "PL": ("PLN", ("PLGDN",), ("PLWAW",)),
    "CZ": ("CZK", (), ("CZPRG",)),
    "GB": ("GBP", ("GBFXT", "GBSOU"), ("GBLHR",)),
    "IE": ("EUR", ("IEDUB",), ("IEDUB",)),
    "CH": ("CHF", (), ("CHZRH", "CHBSL")),
    "VN": ("VND", ("VNSGN", "VNHPH"), ("VNSGN",)),
    "KR": ("KRW", ("KRPUS",), ("KRICN",)),
    "JP": ("JPY", ("JPTYO", "JPYOK"), ("JPNRT",)),
    "IN": ("INR", ("INNSA", "INMUN"), ("INBOM",)),
    "BR": ("BRL", ("BRSSZ",), ("BRGRU",)),
    "SG": ("SGD", ("SGSIN",), ("SGSIN",)),
    "AU": ("AUD", ("AUSYD", "AUMEL"), ("AUSYD",)),
    "TH": ("THB", ("THLCH",), ("THBKK",)),
    "MX": ("MXN", ("MXZLO", "MXVER"), ("MXMEX",)),
    "CA": ("CAD", ("CAVAN", "CAMTR"), ("CAYYZ",)),
    "TR": ("TRY", ("TRMER",), ("TRIST",)),
    "HK": ("HKD", ("HKHKG",), ("HKHKG",)),
    "KZ": ("USD", (), ()),
    "KW": ("KWD", ("KWSWK",), ("KWKWI",)),
    "BH": ("BHD", ("BHKBS",), ("BHBAH",)),
    "CL": ("CLP", ("CLSAI", "CLVAP"), ("CLSCL",)),
}

# Mode -> weighted lanes (origin, destination, weight).
LANES: dict[str, tuple[tuple[str, str, int], ...]] = {
    "ocean": (
        ("CN", "US", 30), ("CN", "DE", 10), ("CN", "NL", 8), ("VN", "US", 8), ("KR", "US", 5),
        ("JP", "US", 4), ("IN", "GB", 4), ("BR", "CN", 4), ("DE", "US", 5), ("TH", "AU", 3),
        ("CN", "SG", 3), ("US", "CN", 3), ("TR", "GB", 2), ("CN", "KW", 2), ("CN", "CL", 2),
        ("IN", "BH", 1), ("CN", "JP", 3), ("MX", "JP", 1), ("VN", "DE", 3),
    ),
    "air": (
        ("CN", "US", 10), ("DE", "US", 6), ("US", "DE", 4), ("JP", "SG", 3), ("GB", "US", 4),
        ("IE", "US", 4), ("CH", "US", 4), ("KR", "US", 3), ("IN", "US", 3), ("SG", "AU", 2),
        ("HK", "GB", 2), ("US", "JP", 2), ("CN", "DE", 3),
    ),
    "road": (
        ("MX", "US", 10), ("CA", "US", 8), ("US", "MX", 4), ("US", "CA", 4), ("DE", "PL", 3),
        ("FR", "ES", 3), ("NL", "DE", 4), ("CZ", "DE", 3), ("IT", "FR", 2),
    ),
    "rail": (("CN", "DE", 6), ("CN", "PL", 3), ("CN", "IT", 1), ("KZ", "CN", 1)),
    "courier": (
        ("GB", "US", 4), ("CN", "US", 5), ("DE", "FR", 2), ("JP", "US", 2), ("US", "CA", 2),
    ),
    "multimodal": (("CN", "DE", 3), ("CN", "US", 3), ("VN", "DE", 1)),
}  # fmt: skip
MODES: tuple[tuple[str, int], ...] = (
    ("ocean", 55), ("air", 22), ("road", 10), ("rail", 4), ("courier", 6), ("multimodal", 3),
)  # fmt: skip
MAIN_CARRIAGE = {
    "ocean": ("ocean_freight",),
    "air": ("air_freight",),
    "road": ("road_freight",),
    "rail": ("rail_freight",),
    "courier": ("air_freight",),
    "multimodal": ("ocean_freight", "road_freight"),
}
TRANSIT_DAYS = {
    "ocean": (14, 45), "air": (1, 5), "road": (1, 7), "rail": (14, 25), "courier": (1, 5),
    "multimodal": (10, 30),
}  # fmt: skip
RAIL_TRANSIT = {"DE": ("KZ", "PL"), "PL": ("KZ",), "IT": ("KZ", "PL", "DE")}

# (category, description, HS code, unit price range in USD cents, unit weight in grams,
# quantity range, weight). Categories are names of rules/reference/goods_categories.yaml,
# never synonyms, so packs rate what the corpus writes (tests/test_goods_categories.py).
GOODS: tuple[tuple[str, str, str, tuple[int, int], int, tuple[int, int], int], ...] = (
    ("electronics", "Laptop computers", "847130", (30_000, 150_000), 2_500, (50, 3_000), 8),
    ("electronics", "Smartphones", "851712", (10_000, 90_000), 300, (100, 5_000), 7),
    ("electronics", "Integrated circuits", "854231", (100, 5_000), 10, (1_000, 200_000), 4),
    ("electronics", "LCD monitors", "852852", (8_000, 40_000), 5_000, (50, 1_500), 3),
    ("apparel", "Cotton T-shirts", "610910", (200, 1_500), 200, (1_000, 50_000), 7),
    ("apparel", "Men's woven trousers", "620342", (500, 3_000), 500, (500, 20_000), 4),
    ("apparel", "Leather footwear", "640399", (800, 6_000), 900, (200, 10_000), 3),
    ("furniture", "Office chairs", "940130", (3_000, 25_000), 15_000, (20, 2_000), 3),
    ("furniture", "Wooden tables", "940360", (5_000, 60_000), 30_000, (10, 800), 3),
    ("machinery", "Centrifugal pumps", "841370", (50_000, 900_000), 80_000, (1, 200), 3),
    ("machinery", "Industrial valves", "848180", (2_000, 80_000), 4_000, (10, 2_000), 3),
    ("machinery", "Parts of machine tools", "846694", (1_000, 50_000), 2_000, (10, 5_000), 2),
    ("vehicles", "Vehicle parts", "870899", (500, 30_000), 3_000, (50, 10_000), 4),
    ("vehicles", "Passenger cars", "870323", (1_500_000, 6_000_000), 1_400_000, (1, 40), 2),
    ("pharmaceuticals", "Medicaments in doses", "300490", (1_000, 50_000), 100, (100, 50_000), 3),
    ("pharmaceuticals", "Vaccines", "300241", (2_000, 20_000), 50, (1_000, 100_000), 1),
    ("foodstuffs", "Green coffee", "090111", (300, 800), 1_000, (5_000, 40_000), 2),
    ("foodstuffs", "Frozen shrimp", "030617", (800, 2_000), 1_000, (2_000, 20_000), 2),
    ("beverages", "Red wine", "220421", (500, 10_000), 1_300, (600, 20_000), 2),
    ("toys", "Toys", "950300", (200, 5_000), 400, (500, 30_000), 3),
    ("fine_art", "Paintings", "970110", (500_000, 50_000_000), 10_000, (1, 5), 1),
    ("chemicals", "Polyethylene granules", "390110", (100, 200), 1_000, (10_000, 100_000), 2),
    ("metals", "Steel structures", "730890", (100_000, 2_000_000), 500_000, (1, 50), 2),
)


def generate(
    n: int,
    seed: int,
    *,
    estimate_in: Collection[str] = ("US",),
    start: datetime.date = START,
    days: int = DAYS,
) -> Iterator[dict[str, Any]]:
    """`n` shipments for `seed`, dated from `start` over `days` days.

    Shipments that leave duties out (to be estimated from country rules) go only to
    the countries in `estimate_in`, which must have rules in effect on those dates.
    """
    if n < 0:
        raise ValueError("n must not be negative")
    for index in range(n):
        yield shipment(seed, index, estimate_in=estimate_in, start=start, days=days)


def shipment(
    seed: int,
    index: int,
    *,
    estimate_in: Collection[str] = ("US",),
    start: datetime.date = START,
    days: int = DAYS,
) -> dict[str, Any]:
    """Shipment `index` of the corpus `seed`, on its own."""
    maker = _Maker(random.Random(f"tiv-corpus:{seed}:{index}"), estimate_in)
    day = start + datetime.timedelta(days=maker.rng.randrange(days) if days > 0 else 0)
    return maker.make(f"SYN-{seed}-{index + 1:07d}", day)


class _Maker:
    def __init__(self, rng: random.Random, estimate_in: Collection[str]) -> None:
        self.rng = rng
        self.estimate_in = estimate_in
        self.fx: dict[str, Decimal] = {}

    def chance(self, percent: int) -> bool:
        return self.rng.randrange(100) < percent

    def pick(self, items: Sequence[T]) -> T:
        return items[self.rng.randrange(len(items))]

    def weighted(self, items: Sequence[tuple[Any, ...]]) -> tuple[Any, ...]:
        totals = list(itertools.accumulate(item[-1] for item in items))
        return items[bisect.bisect_right(totals, self.rng.randrange(totals[-1]))]

    def between(self, low: int, high: int) -> int:
        return self.rng.randint(low, high)

    def make(self, shipment_id: str, day: datetime.date) -> dict[str, Any]:
        mode = self.weighted(MODES)[0]
        origin, destination, _ = self.weighted(LANES[mode])
        valuation = self.valuation_currency(destination)
        invoice_currency = self.invoice_currency(origin, valuation)
        incoterm = self.incoterm(mode)

        goods, weight_grams, goods_usd_cents = self.goods(invoice_currency)
        freight_lines = self.main_carriage(mode, weight_grams)
        seller_pays_carriage = incoterm[0] in "CD"
        invoice = sum((Decimal(g["value"]) for g in goods), Decimal(0))
        if seller_pays_carriage:
            # The seller's price holds the carriage it paid for.
            carriage = sum((cents for _, cents in freight_lines), 0)
            invoice += self.money(carriage, invoice_currency)

        charges: list[dict[str, Any]] = []
        if not seller_pays_carriage or self.chance(50):
            for kind, cents in freight_lines:
                charges.append(self.charge(kind, cents, "USD", valuation))
        if self.chance(70):
            charges.append(self.charge("origin_charges", self.between(15_000, 90_000),
                                       invoice_currency, valuation))  # fmt: skip
        if self.chance(70):
            charges.append(self.charge("destination_charges", self.between(20_000, 120_000),
                                       valuation, valuation))  # fmt: skip
        if mode in ("ocean", "multimodal") and self.chance(6):
            charges.append(
                self.charge("detention", self.between(10_000, 200_000), "USD", valuation)
            )
        if mode in ("ocean", "multimodal") and self.chance(8):
            charges.append(
                self.charge("demurrage", self.between(20_000, 400_000), "USD", valuation)
            )
        if self.chance(20):
            self.rng.shuffle(charges)

        facts: dict[str, Any] = {
            "id": shipment_id,
            "date": day.isoformat(),
            "currency": valuation,
            "incoterm": incoterm,
            "mode": mode,
            "origin": self.place(origin, mode),
            "destination": self.place(destination, mode),
            "payment_method": "collect" if self.chance(15) else "prepaid",
            "expected_transit_days": self.between(*TRANSIT_DAYS[mode]),
            "invoice": {"amount": plain(invoice)},
            "goods": goods,
            "charges": charges,
        }
        if invoice_currency != valuation:
            facts["invoice"]["currency"] = invoice_currency
            self.rate(invoice_currency, valuation)
        if self.chance(8):
            del facts["incoterm"]
        if mode == "rail" and destination in RAIL_TRANSIT:
            facts["transit_countries"] = list(RAIL_TRANSIT[destination])
        duties = self.duties(destination, goods_usd_cents, valuation)
        if duties is not None:
            facts["duties"] = duties
        if self.chance(10):
            # Cover bought at invoice + 10%, rounded to whole units, as brokers quote it.
            cover = self.money(goods_usd_cents * 11 // 10, valuation).quantize(Decimal(1))
            facts["sum_insured"] = plain(cover)
        # Estimated duties, thresholds and fee limits are in the destination's currency (or
        # its customs union's), so rates for both ends, the dollar and the euro are given.
        for code in ("USD", "EUR", COUNTRIES[origin][0], COUNTRIES[destination][0]):
            if code != valuation:
                self.rate(code, valuation)
        facts["fx"] = {code: plain(rate) for code, rate in sorted(self.fx.items())}
        return facts

    # --- parts ---

    def valuation_currency(self, destination: str) -> str:
        local = COUNTRIES[destination][0]
        return "USD" if self.chance(25) else local

    def invoice_currency(self, origin: str, valuation: str) -> str:
        local = COUNTRIES[origin][0]
        roll = self.rng.randrange(100)
        if roll < 55:
            return "USD"
        if roll < 85:
            return local
        return valuation

    def incoterm(self, mode: str) -> str:
        table: tuple[tuple[str, int], ...]
        if mode in ("ocean", "multimodal"):
            table = (("FOB", 30), ("CIF", 20), ("CFR", 10), ("EXW", 8), ("FCA", 8), ("FAS", 2),
                     ("DAP", 8), ("DDP", 6), ("DPU", 2), ("CPT", 3), ("CIP", 3))  # fmt: skip
        else:
            table = (("FCA", 25), ("EXW", 15), ("CPT", 12), ("CIP", 10), ("DAP", 20),
                     ("DDP", 12), ("DPU", 6))  # fmt: skip
        return str(self.weighted(table)[0])

    def place(self, country: str, mode: str) -> dict[str, Any]:
        _, ports, airports = COUNTRIES[country]
        found = ports if mode in ("ocean", "multimodal") else airports if mode == "air" else ()
        place: dict[str, Any] = {"country": country}
        if found and self.chance(85):
            place["port"] = self.pick(found)
        return place

    def goods(self, currency: str) -> tuple[list[dict[str, Any]], int, int]:
        lines = []
        grams = 0
        usd_cents = 0
        for _ in range(self.weighted(((1, 60), (2, 25), (3, 10), (4, 5)))[0]):
            category, description, hs_code, price, unit_grams, quantity, _ = self.weighted(GOODS)
            count = self.between(*quantity)
            cents = self.between(*price) * count
            line_grams = unit_grams * count
            line: dict[str, Any] = {"description": description}
            if self.chance(95):
                line["hs_code"] = hs_code
            line["quantity"] = str(count)
            line["weight_kg"] = plain(Decimal(line_grams).scaleb(-3).quantize(Decimal("0.1")))
            line["value"] = plain(self.money(cents, currency))
            if self.chance(93):
                line["category"] = category
            if self.chance(15):
                line["dimensions_cm"] = {
                    "length": str(self.between(20, 1200)),
                    "width": str(self.between(20, 240)),
                    "height": str(self.between(10, 260)),
                }
            lines.append(line)
            grams += line_grams
            usd_cents += cents
        return lines, grams, usd_cents

    def main_carriage(self, mode: str, grams: int) -> list[tuple[str, int]]:
        kilos = max(grams // 1000, 1)
        # USD cents: a base plus a rate per kg, with +-30% noise.
        base, per_kg = {
            "ocean": (80_000, 15), "air": (15_000, 350), "road": (60_000, 8),
            "rail": (250_000, 12), "courier": (3_000, 800), "multimodal": (120_000, 60),
        }[mode]  # fmt: skip
        total = (base + per_kg * kilos) * self.between(70, 130) // 100
        kinds = MAIN_CARRIAGE[mode]
        if len(kinds) == 1:
            return [(kinds[0], total)]
        first = total * self.between(55, 80) // 100
        return [(kinds[0], first), (kinds[1], total - first)]

    def charge(self, kind: str, usd_cents: int, currency: str, valuation: str) -> dict[str, Any]:
        line: dict[str, Any] = {"type": kind, "amount": plain(self.money(usd_cents, currency))}
        if currency != valuation:
            line["currency"] = currency
            self.rate(currency, valuation)
        return line

    def duties(
        self, destination: str, goods_usd_cents: int, valuation: str
    ) -> list[dict[str, Any]] | None:
        roll = self.rng.randrange(100)
        if destination in self.estimate_in and roll < 40:
            return None  # left out: estimated from the destination's country rules
        if roll >= 88:
            return []  # declared: none apply
        lines = []
        duty_per_mille = self.between(0, 120)
        if duty_per_mille:
            cents = goods_usd_cents * duty_per_mille // 1000
            lines.append({"type": "import_duty", "amount": plain(self.money(cents, valuation))})
        if destination not in ("US", "HK") and self.chance(70):
            cents = goods_usd_cents * self.between(50, 250) // 1000
            lines.append({"type": "tax", "amount": plain(self.money(cents, valuation))})
        if self.chance(60):
            cents = self.between(2_500, 60_000)
            lines.append({"type": "customs_fee", "amount": plain(self.money(cents, valuation))})
        return lines

    def money(self, usd_cents: int, currency: str) -> Decimal:
        """US cents in `currency` at the sample rate, to the currency's minor units."""
        rate, places = PER_USD[currency]
        with localcontext() as ctx:
            ctx.prec = 34
            return (Decimal(usd_cents).scaleb(-2) * Decimal(rate)).quantize(
                Decimal(1).scaleb(-places)
            )

    def rate(self, currency: str, valuation: str) -> Decimal:
        """One `currency` in `valuation`, from the sample rates, +-2%, six significant digits."""
        if currency in self.fx:
            return self.fx[currency]
        wobble = Decimal(10_000 + self.between(-200, 200)).scaleb(-4)
        with localcontext() as ctx:
            ctx.prec = 6
            value = Decimal(PER_USD[valuation][0]) / Decimal(PER_USD[currency][0]) * wobble
        self.fx[currency] = value.normalize()
        return self.fx[currency]
