"""What a rule change does to a book of shipments, before it is published.

In: a rule repository (a folder, or in-memory files), two pinned pack versions
(`standard@1.0.0`, `standard@1.1.0`; drafts allowed, since the point is to see a change
before publishing it) and a corpus: JSON Lines, one shipment's facts per line. Out: an
`ImpactReport`: how many shipments changed; the distribution of the TIV change (and of
the premium change, when results carry a premium) per valuation currency: count, mean,
median, p95, min, max, total; the relative change in percent; decisions that flipped;
failures. And one `ShipmentImpact` per changed shipment, for a CSV or JSON file.

Every shipment is valued under both versions with the same matcher; with `workers` > 1
the corpus is cut into chunks valued in separate processes (each loads the rules once)
and the rows come back in corpus order, so the report is the same for any number of
workers. Figures are exact: changes and statistics are Decimal. The median of an even
count is the mean of the middle two; p95 is the nearest-rank percentile (the value at
rank ceil(0.95 n) of the sorted changes), so it is always a change that occurred.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from engine.api import value, value_versions
from engine.batch.pool import ordered_map
from engine.errors import FactsError, TivError
from engine.loading import jsontext
from engine.money import exact, plain
from engine.result import Valuation
from engine.ruleset import RuleSet

_ANY_DAY = datetime.date(2000, 1, 1)  # pinned versions are selected whatever the day
# Shipments per task: the task is one text and its answer one list, so the hop costs little
# per shipment; about a second of valuing keeps the progress bar moving.
CHUNK = 1000

RulesSpec = str | os.PathLike[str] | Mapping[str, str] | Mapping[str, bytes]
Progress = Callable[[int, int], None]  # (shipments done, total)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Stats(_Model):
    """A distribution of changes; every figure is an exact decimal string."""

    count: int
    mean: str
    median: str
    p95: str = Field(description="nearest rank: the value at rank ceil(0.95 × count)")
    min: str
    max: str
    total: str


class Failure(_Model):
    line: int
    shipment_id: str
    version: str = Field(description="which version failed: before, after or both")
    error: str


class ImpactReport(_Model):
    before: str
    after: str
    corpus: str
    shipments: int = Field(description="lines with a shipment")
    valued: int = Field(description="valued under both versions")
    changed: int = Field(description="TIV, premium, decision or failure differs")
    unchanged: int
    tiv_changed: int
    tiv_change: dict[str, Stats] = Field(description="per valuation currency, over TIV changes")
    tiv_change_percent: Stats | None = Field(description="(after - before) / before × 100")
    premium_changed: int | None = Field(description="None when neither version gives a premium")
    premium_change: dict[str, Stats] | None
    decision_flips: dict[str, int] = Field(description="`accept → refer`: how many")
    failed_before_only: int
    failed_after_only: int
    failed_both: int
    unreadable: int = Field(description="lines that are not a JSON object")
    failures: list[Failure] = Field(description="the first failures, for a person to look at")
    currency_minor_units: dict[str, int] = Field(description="of each valuation currency seen")
    workers: int


class ShipmentImpact(_Model):
    """One changed shipment, a row of the per-shipment file."""

    line: int
    shipment_id: str
    currency: str
    tiv_before: str
    tiv_after: str
    tiv_change: str
    premium_before: str
    premium_after: str
    premium_change: str
    decision_before: str
    decision_after: str
    error_before: str
    error_after: str


MAX_FAILURES_LISTED = 20


@dataclass(frozen=True)
class _Row:
    """One shipment under both versions; plain text so it pickles small."""

    line: int
    shipment_id: str
    currency: str
    tiv: tuple[str, str]
    premium: tuple[str, str]
    decision: tuple[str, str]
    error: tuple[str, str]
    places: int = 2  # the valuation currency's minor units
    unreadable: bool = False


def impact(
    source: RulesSpec,
    before: str,
    after: str,
    corpus: str | os.PathLike[str],
    *,
    workers: int = 1,
    matcher: str | None = None,
    progress: Progress | None = None,
    chunk: int = CHUNK,
) -> tuple[ImpactReport, list[ShipmentImpact]]:
    """Value every shipment of `corpus` under `before` and `after`; compare.

    `source` is a rule repository folder or a mapping of in-memory files (both can be
    sent to worker processes). Raises RulesError or SelectionError before any shipment
    is valued if the rules or either version cannot be used; OSError if the corpus
    cannot be read.
    """
    from engine.api import load_rules

    rules = load_rules(files=source) if isinstance(source, Mapping) else load_rules(Path(source))
    for ref in (before, after):
        if "@" not in ref:
            raise ValueError(f"{ref!r}: name a version, e.g. {ref}@1.0.0")
        rules.select(ref, _ANY_DAY, allow_draft=True)
    _setup(rules, before, after, matcher)  # checks the matcher before any worker starts
    path = Path(corpus)
    total = _count_lines(path)
    workers = max(1, min(workers, (total + chunk - 1) // chunk or 1))
    parts = _evaluate(source, rules, before, after, matcher, _chunks(path, chunk), workers)

    def rows() -> Iterator[_Row]:
        # The report is built as the rows arrive: only changes are kept, not every row.
        done = 0
        if progress:
            progress(0, total)
        for part in parts:
            yield from part
            done += len(part)
            if progress:
                progress(done, total)

    return _report(rows(), before, after, str(path), workers)


def _evaluate(
    source: RulesSpec,
    rules: RuleSet,
    before: str,
    after: str,
    matcher: str | None,
    chunks: Iterable[tuple[int, str]],
    workers: int,
) -> Iterator[list[_Row]]:
    if workers == 1:
        yield from map(_value_chunk, chunks)
        return
    spec = source if isinstance(source, Mapping) else os.fspath(source)
    yield from ordered_map(
        _value_chunk,
        chunks,
        workers=workers,
        initializer=_init,
        initargs=(spec, before, after, matcher),
    )


def _count_lines(path: Path) -> int:
    count = 0
    with path.open("rb") as handle:
        for line in handle:
            if line.strip():
                count += 1
    return count


def _chunks(path: Path, size: int) -> Iterator[tuple[int, str]]:
    """Chunks of `size` shipments as (first line number, the lines' text): one string per
    task, which the worker cuts into lines itself."""
    lines: list[str] = []
    first = count = 0
    with path.open(encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                if lines:  # kept inside a chunk, so the worker counts lines right
                    lines.append(line)
                continue
            if not lines:
                first = number
            lines.append(line)
            count += 1
            if count == size:
                yield first, "".join(lines)
                lines, count = [], 0
    if count:
        yield first, "".join(lines)


# --- in each worker -----------------------------------------------------------------

_STATE: dict[str, Any] = {}


def _init(spec: RulesSpec, before: str, after: str, matcher: str | None) -> None:
    from engine.api import load_rules

    # An initializer that raises breaks the whole pool with a bare BrokenProcessPool; the
    # error is kept and raised by the first chunk instead, which ends the run saying why.
    try:
        rules = load_rules(files=spec) if isinstance(spec, Mapping) else load_rules(Path(spec))
        _setup(rules, before, after, matcher)
    except Exception as exc:
        _STATE["error"] = exc


def _setup(rules: RuleSet, before: str, after: str, matcher: str | None) -> None:
    from engine import available_matchers

    found = available_matchers()
    chosen = next((m for m in found if m.name == matcher), None) if matcher else found[0]
    if chosen is None:
        names = ", ".join(m.name for m in found)
        raise ValueError(f"no matcher {matcher!r} here (available: {names})")
    _STATE.update(rules=rules, refs=(before, after), matcher=chosen)


def _value_chunk(chunk: tuple[int, str]) -> list[_Row]:
    if "error" in _STATE:
        raise _STATE["error"]
    first, text = chunk
    lines = [(n, line) for n, line in enumerate(text.split("\n"), first) if line.strip()]
    # A line either version fails is redone the careful way (`_value_line`).
    rows = []
    refs = _STATE["refs"]
    for number, line in lines:
        # Both versions from one reading of the line's facts (when they are versions of
        # one pack), everything compiled shared.
        a, b = value_versions(
            _STATE["rules"], line, refs, allow_draft=True, matcher=_STATE["matcher"], trace=False
        )
        if isinstance(a, Valuation) and isinstance(b, Valuation) and line.lstrip()[:1] == "{":
            rows.append(_valued_row(number, a, b))
        else:
            rows.append(_value_line(number, line))
    return rows


def _valued_row(number: int, a: Valuation, b: Valuation) -> _Row:
    """A shipment both versions valued: what `_value_line` would make of it."""
    return _Row(
        number,
        a.shipment_id,
        b.currency,
        (plain(a.total_insured_value), plain(b.total_insured_value)),
        (_premium_text(a), _premium_text(b)),
        (a.decision, b.decision),
        ("", ""),
        b.currency_minor_units,
    )


def _premium_text(result: Valuation) -> str:
    premium = premium_of(result)
    return "" if premium is None else plain(premium)


def _value_line(number: int, text: str) -> _Row:
    """One line the careful way: read by the strict reader (an unreadable line is counted
    as such), then valued from the mapping under each version, each failure kept."""
    facts = _parse(text)
    if facts is None:
        return _Row(number, "", "", ("", ""), ("", ""), ("", ""), ("", ""), unreadable=True)
    found = facts.get("id")
    shipment_id = found if isinstance(found, str) else ""
    outcomes: list[tuple[str, str, str, str, str]] = []
    currency, places = "", 2
    for ref in _STATE["refs"]:
        try:
            # Parsed once for both versions: a mapping is validated, not parsed again.
            result = value(
                _STATE["rules"],
                facts,
                policy=ref,
                allow_draft=True,
                matcher=_STATE["matcher"],
                trace=False,
            )
        except TivError as exc:
            outcomes.append(("", "", "", _one_line(exc), ""))
            continue
        currency, places = result.currency, result.currency_minor_units
        premium = premium_of(result)
        outcomes.append(
            (
                plain(result.total_insured_value),
                "" if premium is None else plain(premium),
                result.decision,
                "",
                currency,
            )
        )
    (tiv_a, prem_a, dec_a, err_a, _), (tiv_b, prem_b, dec_b, err_b, _) = outcomes
    return _Row(
        number, shipment_id, currency, (tiv_a, tiv_b), (prem_a, prem_b), (dec_a, dec_b),
        (err_a, err_b), places,
    )  # fmt: skip


def _parse(text: str) -> dict[str, Any] | None:
    """A line's JSON object, numbers exact; None unless it is one, without repeated keys
    or NaN (which readers disagree on), so such a line is unreadable, not guessed at."""
    try:
        data = jsontext.loads(text)
    except FactsError:
        return None
    return data if isinstance(data, dict) else None


def _one_line(exc: TivError) -> str:
    return f"{exc.kind}: {' '.join(str(exc).split())}"


def premium_of(result: Valuation) -> Decimal | None:
    """The premium a result carries, if its pack computes one; None otherwise."""
    premium = getattr(result, "premium", None)
    if premium is None:
        return None
    if isinstance(premium, str | Decimal | int) and not isinstance(premium, bool):
        return Decimal(premium)
    for name in ("amount", "total", "premium", "value"):
        found = premium.get(name) if isinstance(premium, Mapping) else getattr(premium, name, None)
        if isinstance(found, str | Decimal | int) and not isinstance(found, bool):
            return Decimal(found)
    return None


# --- the report ---------------------------------------------------------------------


def _report(
    rows: Iterable[_Row], before: str, after: str, corpus: str, workers: int
) -> tuple[ImpactReport, list[ShipmentImpact]]:
    tiv_changes: dict[str, list[Decimal]] = {}
    premium_changes: dict[str, list[Decimal]] = {}
    percents: list[Decimal] = []
    flips: Counter[str] = Counter()
    failures: list[Failure] = []
    counts: Counter[str] = Counter()
    details: list[ShipmentImpact] = []
    any_premium = False
    places: dict[str, int] = {}
    with exact():
        for row in rows:
            if row.unreadable:
                counts["unreadable"] += 1
                continue
            counts["shipments"] += 1
            if row.currency:
                places[row.currency] = row.places
            err_a, err_b = row.error
            if err_a or err_b:
                which = "both" if err_a and err_b else "before" if err_a else "after"
                counts[f"failed_{which}"] += 1
                if len(failures) < MAX_FAILURES_LISTED:
                    failures.append(
                        Failure(
                            line=row.line,
                            shipment_id=row.shipment_id,
                            version=which,
                            error=err_b if which == "after" else err_a,
                        )
                    )
            tiv_change = premium_change = None
            if not (err_a or err_b):
                counts["valued"] += 1
                tiv_a, tiv_b = (Decimal(t) for t in row.tiv)
                if tiv_a != tiv_b:
                    tiv_change = tiv_b - tiv_a
                    tiv_changes.setdefault(row.currency, []).append(tiv_change)
                    if tiv_a != 0:
                        percents.append(tiv_change / tiv_a * 100)
                prem_a, prem_b = row.premium
                if prem_a or prem_b:
                    any_premium = True
                if prem_a and prem_b and Decimal(prem_a) != Decimal(prem_b):
                    premium_change = Decimal(prem_b) - Decimal(prem_a)
                    premium_changes.setdefault(row.currency, []).append(premium_change)
                if row.decision[0] != row.decision[1]:
                    flips[f"{row.decision[0]} → {row.decision[1]}"] += 1
            changed = (
                tiv_change is not None
                or premium_change is not None
                or bool(row.premium[0]) != bool(row.premium[1])
                or row.decision[0] != row.decision[1]
                or err_a != err_b
            )
            if changed:
                details.append(_detail(row, tiv_change, premium_change))
    shipments = counts["shipments"]
    report = ImpactReport(
        before=before,
        after=after,
        corpus=corpus,
        shipments=shipments,
        valued=counts["valued"],
        changed=len(details),
        unchanged=shipments - len(details),
        tiv_changed=sum(len(v) for v in tiv_changes.values()),
        tiv_change={c: statistics(v) for c, v in sorted(tiv_changes.items())},
        tiv_change_percent=statistics(percents) if percents else None,
        premium_changed=sum(len(v) for v in premium_changes.values()) if any_premium else None,
        premium_change=(
            {c: statistics(v) for c, v in sorted(premium_changes.items())} if any_premium else None
        ),
        decision_flips=dict(sorted(flips.items(), key=lambda kv: (-kv[1], kv[0]))),
        failed_before_only=counts["failed_before"],
        failed_after_only=counts["failed_after"],
        failed_both=counts["failed_both"],
        unreadable=counts["unreadable"],
        failures=failures,
        currency_minor_units=dict(sorted(places.items())),
        workers=workers,
    )
    return report, details


def _detail(row: _Row, tiv: Decimal | None, premium: Decimal | None) -> ShipmentImpact:
    # Built without validation: every field is already the text or number it must be, and
    # validating one per changed shipment was most of the main process's work.
    return ShipmentImpact.model_construct(
        line=row.line,
        shipment_id=row.shipment_id,
        currency=row.currency,
        tiv_before=row.tiv[0],
        tiv_after=row.tiv[1],
        tiv_change=plain(tiv) if tiv is not None else "",
        premium_before=row.premium[0],
        premium_after=row.premium[1],
        premium_change=plain(premium) if premium is not None else "",
        decision_before=row.decision[0],
        decision_after=row.decision[1],
        error_before=row.error[0],
        error_after=row.error[1],
    )


def statistics(values: Sequence[Decimal]) -> Stats:
    """Exact count, mean, median, nearest-rank p95, min, max and total of `values`."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    n = len(ordered)
    with exact():
        total = sum(ordered, Decimal(0))
        mean = total / n
        middle = n // 2
        median = ordered[middle] if n % 2 else (ordered[middle - 1] + ordered[middle]) / 2
        p95 = ordered[(95 * n + 99) // 100 - 1]
    return Stats(
        count=n,
        mean=plain(mean),
        median=plain(median),
        p95=plain(p95),
        min=plain(ordered[0]),
        max=plain(ordered[-1]),
        total=plain(total),
    )


# --- output -------------------------------------------------------------------------


def details_csv(details: Sequence[ShipmentImpact]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(ShipmentImpact.model_fields)
    for row in details:
        writer.writerow(row.model_dump().values())
    return out.getvalue()


def details_json(details: Sequence[ShipmentImpact]) -> str:
    return json.dumps([d.model_dump() for d in details], indent=2, ensure_ascii=False) + "\n"


def render_impact(report: ImpactReport) -> str:
    """The report for a person; figures rounded for reading only, marked with ≈."""
    lines = [
        f"Impact of {report.before} → {report.after} on {report.corpus}",
        f"  {report.shipments:,} shipment(s); {report.valued:,} valued under both versions"
        + (f"; {report.unreadable:,} unreadable line(s)" if report.unreadable else ""),
        f"  changed: {report.changed:,}{_share(report.changed, report.shipments)}; "
        f"unchanged: {report.unchanged:,}",
        "",
    ]
    if report.tiv_changed:
        lines.append(
            f"TIV change, over the {report.tiv_changed:,} shipment(s) whose TIV changed "
            "(after − before, in each valuation currency):"
        )
        lines += _table(report.tiv_change, report.currency_minor_units)
        if report.tiv_change_percent:
            p = report.tiv_change_percent
            lines.append(
                f"  relative: mean {_pct(p.mean)}, median {_pct(p.median)}, p95 {_pct(p.p95)}, "
                f"min {_pct(p.min)}, max {_pct(p.max)}"
            )
    else:
        lines.append("TIV change: none; every shipment valued under both has the same TIV.")
    lines.append("")
    if report.premium_change is None:
        lines.append("Premium change: neither version computes a premium.")
    elif report.premium_changed:
        lines.append(f"Premium change, over the {report.premium_changed:,} shipment(s) changed:")
        lines += _table(report.premium_change, report.currency_minor_units)
    else:
        lines.append("Premium change: none.")
    lines.append("")
    if report.decision_flips:
        lines.append("Decisions that flipped:")
        lines += [f"  {flip}: {count:,}" for flip, count in report.decision_flips.items()]
    else:
        lines.append("Decisions that flipped: none.")
    failed = report.failed_before_only + report.failed_after_only + report.failed_both
    if failed:
        lines += [
            "",
            f"Failures: {report.failed_after_only:,} under {report.after} only, "
            f"{report.failed_before_only:,} under {report.before} only, "
            f"{report.failed_both:,} under both. First:",
        ]
        lines += [
            f"  line {f.line} ({f.shipment_id or 'no id'}), {f.version}: {f.error}"
            for f in report.failures[:5]
        ]
    return "\n".join(lines) + "\n"


def _table(stats: Mapping[str, Stats], places: Mapping[str, int]) -> list[str]:
    header = ("currency", "count", "mean", "median", "p95", "min", "max", "total")
    rows = [header] + [
        (
            currency,
            f"{s.count:,}",
            *(
                _approx(figure, places.get(currency, 2))
                for figure in (s.mean, s.median, s.p95, s.min, s.max, s.total)
            ),
        )
        for currency, s in stats.items()
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return [
        "  "
        + "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]


def _approx(text: str, places: int = 2) -> str:
    """Thousands separators and at most `places` decimals, with ≈ when that rounded."""
    value = Decimal(text)
    rounded = value.quantize(Decimal(1).scaleb(-places))
    shown = rounded if rounded != value else value
    mark = "≈" if shown != value else ""
    sign = "+" if shown > 0 else ""
    return f"{mark}{sign}{shown:,}"


def _pct(text: str) -> str:
    return f"{_approx(text)}%"


def _share(part: int, whole: int) -> str:
    if not whole:
        return ""
    with exact():
        share = (Decimal(part) * 100 / whole).quantize(Decimal("0.1"))
    return f" ({share}%)"
