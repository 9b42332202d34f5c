"""The application workflow: quote, review, bind, cancel, endorse, on one book of business.

In: shipment facts and a pack (`quote`), an underwriter's decision (`review`), a payment
(`bind`), a change of facts (`endorse`), a cancellation. Out: `Quote` and `Policy`
records in the book's database, and certificates (`engine.applications.certificate`).

Every state change is one database transaction that also appends a record to the audit
chain before it commits: a change the audit chain refused is rolled back, so the book
never holds a state the chain does not explain. (The chain is a separate file; a crash
between its write and the database commit leaves an audit record of a change that did
not happen, which the event's absence from `tiv_events` shows.)

Figures come from the rules: the premium, TIV and deductible of a quote are the pack's;
how long a quote may be bound is the pack's `quote_validity_days` parameter and the
certificate's clauses its `clauses` parameter. Python only moves figures around: an
endorsement charges the difference between the rules' premiums before and after, and a
cancellation before departure returns the premium paid (the risk never attached: Marine
Insurance Act 1906 s.84(1), the consideration for the premium totally fails).
"""

from __future__ import annotations

import datetime
import json
import os
import uuid
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select, update

from engine import RuleSet, Valuation, read_facts, value
from engine.applications.audit import AuditChain, AuditTarget
from engine.applications.errors import ApplicationError
from engine.applications.models import (
    BookEvent,
    Certificate,
    Endorsement,
    PackRef,
    Payment,
    Policy,
    Quote,
    QuoteReason,
    Reproduction,
    Review,
)
from engine.applications.store import open_engine, reading, transaction
from engine.applications.tables import endorsements, events, policies, quotes
from engine.compliance.audit import canonical_json
from engine.loading.snapshot import rules_id

VALIDITY_PARAMETER = "quote_validity_days"
CLAUSES_PARAMETER = "clauses"
_STATE_OF_DECISION = {"accept": "accepted", "refer": "referred", "decline": "declined"}
_BINDABLE = ("accepted", "approved")

Clock = Callable[[], datetime.datetime]
RulesInput = RuleSet | Callable[[], RuleSet]


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class Book:
    """A book of quotes and policies in one database, priced with one rule set.

        book = Book("book.db", rules, audit="audit.db")
        quote = book.quote(facts, policy="blue-harbour", insured="Acme Trading Ltd")
        policy = book.bind(quote.id, payment_ref="PAY-1", amount=quote.premium_due)
        certificate = book.certificate(policy.id)

    `db` is a SQLite path or URL, or a `postgresql://` URL (see `store`). `rules` is a
    RuleSet, or a function returning the current one (a service that reloads rules).
    `audit` is an audit store path, an `AuditSink`, or None for no audit chain. `clock`
    gives the current UTC time (tests move it to make quotes expire).
    """

    def __init__(
        self,
        db: str | os.PathLike[str] | Engine,
        rules: RulesInput,
        *,
        audit: str | os.PathLike[str] | AuditTarget | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self.engine = db if isinstance(db, Engine) else open_engine(db)
        self._rules = rules if callable(rules) and not isinstance(rules, RuleSet) else None
        self._fixed_rules = rules if isinstance(rules, RuleSet) else None
        self.audit = AuditChain(audit) if audit is not None else None
        self.clock = clock

    @property
    def rules(self) -> RuleSet:
        if self._fixed_rules is not None:
            return self._fixed_rules
        assert self._rules is not None
        return self._rules()

    def close(self) -> None:
        if self.audit is not None:
            self.audit.close()
        self.engine.dispose()

    def __enter__(self) -> Book:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- quote ---------------------------------------------------------------------

    def quote(
        self,
        facts: Any,
        *,
        policy: str,
        insured: str,
        conveyance: str | None = None,
        allow_draft: bool = False,
    ) -> Quote:
        """Price an application under `policy`; referred quotes wait for `review`.

        Raises FactsError, SelectionError or EvaluationError as `engine.value` does, and
        ApplicationError when the pack has no quote terms.
        """
        insured = _required(insured, "insured")
        rules = self.rules
        result = value(rules, facts, policy=policy, allow_draft=allow_draft)
        pack = rules.select(
            f"{result.policy.id}@{result.policy.version}", result.as_of, allow_draft=True
        )
        days = _validity_days(pack.parameters.get(VALIDITY_PARAMETER), pack.ref)
        _clauses(pack.parameters.get(CLAUSES_PARAMETER), pack.ref)
        shipment = read_facts(_reread(facts), rules.facts_reference(pack))
        canonical = shipment.canonical()
        now = self.clock()
        row = {
            "id": _new_id("Q"),
            "created_at": _stamp(now),
            "state": _STATE_OF_DECISION[result.decision],
            "insured": insured,
            "conveyance": (conveyance or "").strip() or None,
            "pack_id": result.policy.id,
            "pack_version": result.policy.version,
            "pack_sha256": result.policy.sha256,
            "rules_id": rules_id(rules),
            "as_of": result.as_of,
            "valid_until": now.date() + datetime.timedelta(days=days),
            "shipment_id": result.shipment_id,
            "facts": canonical_json(canonical),
            "valuation": canonical_json(result.model_dump(mode="json")),
            "currency": result.currency,
            "total_insured_value": result.total_insured_value,
            "premium": result.premium,
            "deductible": result.deductible,
            "decision": result.decision,
            "reasons": canonical_json(
                [
                    {"decision": r.decision, "rule": r.rule, "reason": r.reason, "source": r.source}
                    for r in result.reasons
                ]
            ),
        }
        with transaction(self.engine) as conn:
            conn.execute(insert(quotes).values(**row))
            audit_id = self._audit("application.quote", canonical, result, rules)
            if audit_id:
                conn.execute(
                    update(quotes).where(quotes.c.id == row["id"]).values(audit_id=audit_id)
                )
            quote_id = str(row["id"])
            self._event(conn, now, "quote", quote_id, None, {"state": row["state"]}, audit_id)
            return self._quote(conn, quote_id)

    # --- review --------------------------------------------------------------------

    def review(
        self,
        quote_id: str,
        *,
        approve: bool,
        by: str,
        reason: str,
        premium: Decimal | str | None = None,
        conditions: str | None = None,
    ) -> Quote:
        """An underwriter's decision on a referred quote: approve (optionally with an
        override premium or conditions) or decline (final)."""
        by = _required(by, "by")
        reason = _required(reason, "reason")
        override = None if premium is None else _amount(premium, "premium")
        if not approve and (override is not None or conditions):
            raise ApplicationError(
                "input.review", "a declined quote takes no premium or conditions; only a reason"
            )
        if override is not None and override <= 0:
            raise ApplicationError("input.premium", f"premium {override} must be above zero")
        rules = self.rules
        now = self.clock()
        with transaction(self.engine) as conn:
            row = self._lock_quote(conn, quote_id)
            if row.state != "referred":
                raise ApplicationError("review.not_referred", _not_referred(row))
            if now.date() > row.valid_until:
                raise ApplicationError(
                    "review.expired",
                    f"quote {quote_id} expired on {row.valid_until.isoformat()}: "
                    "quote the application again",
                )
            if override is not None:
                _check_minor_units(override, Valuation.model_validate_json(row.valuation))
            state = "approved" if approve else "declined"
            changed = conn.execute(
                update(quotes)
                .where(quotes.c.id == quote_id, quotes.c.state == "referred")
                .values(
                    state=state,
                    reviewed_by=by,
                    review_reason=reason,
                    reviewed_at=_stamp(now),
                    override_premium=override,
                    override_conditions=(conditions or "").strip() or None,
                )
            ).rowcount
            if changed != 1:
                raise ApplicationError("review.not_referred", f"quote {quote_id} changed meanwhile")
            detail = {
                "decision": "approve" if approve else "decline",
                "by": by,
                "reason": reason,
                "rule_premium": row.premium,
                "override_premium": override,
                "conditions": conditions,
            }
            audit_id = self._audit_event(
                "review", quote_id, None, detail, row.facts, row.valuation, rules
            )
            self._event(conn, now, "review", quote_id, None, detail, audit_id)
            return self._quote(conn, quote_id)

    # --- bind ----------------------------------------------------------------------

    def bind(self, quote_id: str, *, payment_ref: str, amount: Decimal | str) -> Policy:
        """Record the payment of an accepted or approved quote; the policy takes effect.

        The amount must equal the premium due exactly. Of two binds racing for one
        quote, exactly one wins; the other is refused as already bound.
        """
        payment_ref = _required(payment_ref, "payment reference")
        paid = _amount(amount, "amount")
        rules = self.rules
        now = self.clock()
        with transaction(self.engine) as conn:
            row = self._lock_quote(conn, quote_id)
            _check_bindable(row, now.date())
            due = row.override_premium if row.override_premium is not None else row.premium
            if due is None:
                raise ApplicationError(
                    "bind.no_premium",
                    f"{row.pack_id}@{row.pack_version} rates no premium, so there is nothing "
                    "to pay; an underwriter must set one (tiv review --premium)",
                )
            if paid != due:
                raise ApplicationError(
                    "bind.amount",
                    f"the payment of {paid} {row.currency} does not equal the premium due, "
                    f"{due} {row.currency}; pay exactly the premium",
                )
            # The conditional update is what makes a racing second bind lose, whatever
            # the database: only one transaction can move the quote out of a bindable state.
            claimed = conn.execute(
                update(quotes)
                .where(quotes.c.id == quote_id, quotes.c.state.in_(_BINDABLE))
                .values(state="bound")
            ).rowcount
            if claimed != 1:
                raise ApplicationError("bind.already_bound", f"quote {quote_id} is already bound")
            policy_id = _new_id("P")
            facts = json.loads(row.facts)
            conn.execute(
                insert(policies).values(
                    id=policy_id,
                    quote_id=quote_id,
                    certificate_number="COI-" + policy_id.removeprefix("P-"),
                    state="in_force",
                    bound_at=_stamp(now),
                    effective_date=now.date(),
                    payment_ref=payment_ref,
                    payment_amount=paid,
                    premium=due,
                    rule_premium=row.premium,
                    facts=row.facts,
                    total_insured_value=row.total_insured_value,
                    sum_insured=_sum_insured(facts, row.total_insured_value),
                    deductible=row.deductible,
                    clauses=canonical_json(self._clauses_of(row)),
                    endorsements=0,
                )
            )
            detail = {"payment_ref": payment_ref, "amount": paid, "premium_due": due}
            audit_id = self._audit_event(
                "bind", quote_id, policy_id, detail, row.facts, row.valuation, rules
            )
            self._event(conn, now, "bind", quote_id, policy_id, detail, audit_id)
            return self._policy(conn, policy_id)

    # --- after binding ---------------------------------------------------------------

    def cancel(self, policy_id: str, *, by: str | None = None, reason: str | None = None) -> Policy:
        """Cancel a policy before departure: the whole premium charged is returned."""
        rules = self.rules
        now = self.clock()
        with transaction(self.engine) as conn:
            row = self._lock_policy(conn, policy_id)
            facts = json.loads(row.facts)
            departure = datetime.date.fromisoformat(facts["date"])
            if now.date() >= departure:
                raise ApplicationError(
                    "cancel.departed",
                    f"policy {policy_id} cannot be cancelled: the goods departed on "
                    f"{departure.isoformat()} (cancellation is only before departure)",
                )
            returned = row.premium
            seq = self._next_endorsement(conn, policy_id)
            quote = self._quote_row(conn, row.quote_id)
            detail = {"returned_premium": returned, "by": by, "reason": reason}
            audit_id = self._audit_event(
                "cancel", row.quote_id, policy_id, detail, row.facts, quote.valuation, rules
            )
            conn.execute(
                insert(endorsements).values(
                    policy_id=policy_id,
                    seq=seq,
                    kind="cancel",
                    at=_stamp(now),
                    by=by,
                    reason=reason,
                    changes="{}",
                    premium_before=row.premium,
                    premium_after=Decimal(0).quantize(row.premium),
                    premium_change=-returned,
                    audit_id=audit_id,
                )
            )
            conn.execute(
                update(policies)
                .where(policies.c.id == policy_id)
                .values(state="cancelled", cancelled_at=_stamp(now), returned_premium=returned)
            )
            self._event(conn, now, "cancel", row.quote_id, policy_id, detail, audit_id)
            return self._policy(conn, policy_id)

    def endorse(
        self,
        policy_id: str,
        changes: Mapping[str, Any],
        *,
        by: str | None = None,
        reason: str | None = None,
    ) -> Policy:
        """Change the insured shipment's facts (top-level keys replaced, e.g.
        {"sum_insured": "300000.00"}) and re-rate under the policy's own pack version.

        The premium moves by the difference of the rules' premiums before and after
        (positive: additional premium; negative: returned premium), so an underwriter's
        override keeps its loading. An endorsement the rules refer or decline is refused.
        """
        if not isinstance(changes, Mapping) or not changes:
            raise ApplicationError(
                "input.changes", 'an endorsement needs changed facts, e.g. {"sum_insured": "1"}'
            )
        rules = self.rules
        now = self.clock()
        with transaction(self.engine) as conn:
            row = self._lock_policy(conn, policy_id)
            quote = self._quote_row(conn, row.quote_id)
            facts = {**json.loads(row.facts), **dict(changes)}
            result = value(
                rules,
                facts,
                policy=f"{quote.pack_id}@{quote.pack_version}",
                as_of=quote.as_of,
                allow_draft=True,
            )
            if result.policy.sha256 != quote.pack_sha256:
                raise ApplicationError(
                    "endorse.rules_changed",
                    f"{quote.pack_id}@{quote.pack_version} is no longer the file that priced "
                    "the policy (its sha256 differs); endorse with the original rules",
                )
            if result.decision != "accept":
                why = "; ".join(f"{r.rule}: {r.reason}" for r in result.reasons)
                raise ApplicationError(
                    "endorse.not_accepted",
                    f"the endorsed shipment is {result.decision}ed by the rules ({why}); "
                    "quote it as a new application for an underwriter",
                )
            before = row.rule_premium or Decimal(0)
            after = result.premium or Decimal(0)
            change = after - before
            premium_after = row.premium + change
            pack = rules.select(
                f"{quote.pack_id}@{quote.pack_version}", quote.as_of, allow_draft=True
            )
            canonical = read_facts(_reread(facts), rules.facts_reference(pack)).canonical()
            changed = {k: canonical.get(k) for k in changes}
            seq = self._next_endorsement(conn, policy_id)
            detail = {
                "changes": changed,
                "rule_premium_before": before,
                "rule_premium_after": after,
                "premium_change": change,
                "by": by,
                "reason": reason,
            }
            audit_id = self._audit_event(
                "endorse", row.quote_id, policy_id, detail, canonical, result, rules
            )
            conn.execute(
                insert(endorsements).values(
                    policy_id=policy_id,
                    seq=seq,
                    kind="endorse",
                    at=_stamp(now),
                    by=by,
                    reason=reason,
                    changes=canonical_json(changed),
                    total_insured_value=result.total_insured_value,
                    rule_premium_before=before,
                    rule_premium_after=after,
                    premium_before=row.premium,
                    premium_after=premium_after,
                    premium_change=change,
                    audit_id=audit_id,
                )
            )
            total = result.total_insured_value
            conn.execute(
                update(policies)
                .where(policies.c.id == policy_id)
                .values(
                    facts=canonical_json(canonical),
                    total_insured_value=total,
                    sum_insured=_sum_insured(canonical, total),
                    deductible=result.deductible,
                    rule_premium=after,
                    premium=premium_after,
                    endorsements=seq,
                )
            )
            self._event(conn, now, "endorse", row.quote_id, policy_id, detail, audit_id)
            return self._policy(conn, policy_id)

    # --- reading -------------------------------------------------------------------

    def get_quote(self, quote_id: str) -> Quote:
        with reading(self.engine) as conn:
            return self._quote(conn, quote_id)

    def get_policy(self, policy_id: str) -> Policy:
        with reading(self.engine) as conn:
            return self._policy(conn, policy_id)

    def policies(
        self, *, state: str | None = None, packs: frozenset[str] | None = None
    ) -> list[Policy]:
        """Every policy, oldest first; only those of `packs` (a tenant's) when given."""
        query = (
            select(policies.c.id)
            .join(quotes, quotes.c.id == policies.c.quote_id)
            .order_by(policies.c.bound_at, policies.c.id)
        )
        if state is not None:
            query = query.where(policies.c.state == state)
        if packs is not None:
            query = query.where(quotes.c.pack_id.in_(sorted(packs)))
        with reading(self.engine) as conn:
            return [self._policy(conn, pid) for pid in conn.execute(query).scalars()]

    def certificate(self, policy_id: str) -> Certificate:
        """The certificate of insurance of an in-force policy, with its record's hash."""
        from engine.applications.certificate import build

        return build(self.get_policy(policy_id), self.rules)

    def certificate_pdf(self, policy_id: str) -> bytes:
        """The certificate as a PDF document."""
        from engine.applications.certificate import render_pdf

        return render_pdf(self.certificate(policy_id))

    def reproduce(self, quote_id: str) -> Reproduction:
        """Value the quote's recorded facts again under its recorded pack version and
        date, and compare every figure and the pack's bytes."""
        quote = self.get_quote(quote_id)
        with reading(self.engine) as conn:
            row = self._quote_row(conn, quote_id)
        recorded = Valuation.model_validate_json(row.valuation)
        now = value(
            self.rules,
            json.loads(row.facts),
            policy=f"{quote.policy.id}@{quote.policy.version}",
            as_of=quote.as_of,
            allow_draft=True,
        )
        differences = []
        # Compared as written (decimal text), so a figure that kept its value but not its
        # places (1100.0 for 1100.00) is a difference too.
        was, is_now = recorded.model_dump(mode="json"), now.model_dump(mode="json")
        for name in ("total_insured_value", "premium", "deductible", "decision", "currency"):
            before, after = was[name], is_now[name]
            if before != after:
                differences.append(f"{name}: {before} -> {after}")
        for group in ("components", "figures"):
            before_map, after_map = was[group], is_now[group]
            for key in sorted(set(before_map) | set(after_map)):
                if before_map.get(key) != after_map.get(key):
                    differences.append(
                        f"{group}.{key}: {before_map.get(key)} -> {after_map.get(key)}"
                    )
        if now.policy.sha256 != quote.policy.sha256:
            differences.append(f"pack sha256: {quote.policy.sha256} -> {now.policy.sha256}")
        return Reproduction(quote_id=quote_id, same=not differences, differences=differences)

    # --- plumbing ------------------------------------------------------------------

    def _audit(
        self, kind: str, facts: Mapping[str, Any], result: Any, rules: RuleSet
    ) -> str | None:
        if self.audit is None:
            return None
        try:
            return self.audit.record(kind, facts, result, rules)
        except Exception as exc:  # the audit store's own error: the change is rolled back
            raise ApplicationError(
                "db.audit", f"the audit chain refused the record, nothing changed: {exc}"
            ) from None

    def _audit_event(
        self,
        event: str,
        quote_id: str,
        policy_id: str | None,
        detail: dict[str, Any],
        facts: str | Mapping[str, Any],
        valuation: Valuation | str,
        rules: RuleSet,
    ) -> str | None:
        if self.audit is None:
            return None
        if isinstance(valuation, str):  # the stored JSON: parsed only when it is recorded
            valuation = Valuation.model_validate_json(valuation)
        record = BookEvent(
            event=event,
            quote_id=quote_id,
            policy_id=policy_id,
            detail=json.loads(canonical_json(detail)),
            valuation=valuation.model_copy(update={"trace": [], "audit_id": None}),
        )
        shipment = json.loads(facts) if isinstance(facts, str) else dict(facts)
        return self._audit(f"application.{event}", shipment, record, rules)

    def _event(
        self,
        conn: Connection,
        now: datetime.datetime,
        kind: str,
        quote_id: str,
        policy_id: str | None,
        detail: Mapping[str, Any],
        audit_id: str | None,
    ) -> None:
        conn.execute(
            insert(events).values(
                at=_stamp(now),
                kind=kind,
                quote_id=quote_id,
                policy_id=policy_id,
                detail=canonical_json(dict(detail)),
                audit_id=audit_id,
            )
        )

    def _quote_row(self, conn: Connection, quote_id: str, lock: bool = False) -> Any:
        query = select(quotes).where(quotes.c.id == quote_id)
        row = conn.execute(query.with_for_update() if lock else query).one_or_none()
        if row is None:
            raise ApplicationError("quote.unknown", f"no quote {quote_id} in the book")
        return row

    def _lock_quote(self, conn: Connection, quote_id: str) -> Any:
        return self._quote_row(conn, quote_id, lock=True)

    def _lock_policy(self, conn: Connection, policy_id: str) -> Any:
        row = conn.execute(
            select(policies).where(policies.c.id == policy_id).with_for_update()
        ).one_or_none()
        if row is None:
            raise ApplicationError("policy.unknown", f"no policy {policy_id} in the book")
        if row.state == "cancelled":
            raise ApplicationError(
                "policy.cancelled", f"policy {policy_id} was cancelled on {row.cancelled_at}"
            )
        return row

    def _clauses_of(self, quote: Any) -> list[str]:
        """The clauses of the quote's pack version, copied into the policy when bound, so
        the policy record (and its certificate's hash) never depends on the rules loaded."""
        pack = self.rules.select(
            f"{quote.pack_id}@{quote.pack_version}", quote.as_of, allow_draft=True
        )
        return _clauses(pack.parameters.get(CLAUSES_PARAMETER), pack.ref)

    def _next_endorsement(self, conn: Connection, policy_id: str) -> int:
        last = conn.execute(
            select(func.max(endorsements.c.seq)).where(endorsements.c.policy_id == policy_id)
        ).scalar()
        return int(last or 0) + 1

    def _quote(self, conn: Connection, quote_id: str) -> Quote:
        row = self._quote_row(conn, quote_id)
        bound = conn.execute(
            select(policies.c.id).where(policies.c.quote_id == quote_id)
        ).scalar_one_or_none()
        review = None
        if row.reviewed_by is not None:
            review = Review(
                decision="approve" if row.state in ("approved", "bound") else "decline",
                by=row.reviewed_by,
                reason=row.review_reason or "",
                at=row.reviewed_at or "",
                rule_premium=_text(row.premium),
                override_premium=_text(row.override_premium),
                conditions=row.override_conditions,
            )
        due = row.override_premium if row.override_premium is not None else row.premium
        return Quote(
            id=row.id,
            created_at=row.created_at,
            state=row.state,
            insured=row.insured,
            conveyance=row.conveyance,
            policy=PackRef(id=row.pack_id, version=row.pack_version, sha256=row.pack_sha256),
            rules_id=row.rules_id,
            as_of=row.as_of,
            valid_until=row.valid_until,
            shipment_id=row.shipment_id,
            currency=row.currency,
            total_insured_value=str(row.total_insured_value),
            premium=_text(row.premium),
            deductible=_text(row.deductible),
            decision=row.decision,
            reasons=[QuoteReason(**r) for r in json.loads(row.reasons)],
            review=review,
            premium_due=_text(due),
            policy_id=bound,
            audit_id=row.audit_id,
        )

    def _policy(self, conn: Connection, policy_id: str) -> Policy:
        row = conn.execute(select(policies).where(policies.c.id == policy_id)).one_or_none()
        if row is None:
            raise ApplicationError("policy.unknown", f"no policy {policy_id} in the book")
        quote = self._quote_row(conn, row.quote_id)
        changes = conn.execute(
            select(endorsements)
            .where(endorsements.c.policy_id == policy_id)
            .order_by(endorsements.c.seq)
        ).all()
        return Policy(
            id=row.id,
            quote_id=row.quote_id,
            certificate_number=row.certificate_number,
            state=row.state,
            insured=quote.insured,
            conveyance=quote.conveyance,
            policy=PackRef(id=quote.pack_id, version=quote.pack_version, sha256=quote.pack_sha256),
            bound_at=row.bound_at,
            effective_date=row.effective_date,
            payment=Payment(reference=row.payment_ref, amount=str(row.payment_amount)),
            currency=quote.currency,
            facts=json.loads(row.facts),
            total_insured_value=str(row.total_insured_value),
            sum_insured=str(row.sum_insured),
            premium=str(row.premium),
            rule_premium=_text(row.rule_premium),
            deductible=_text(row.deductible),
            clauses=json.loads(row.clauses),
            conditions=quote.override_conditions,
            endorsements=[
                Endorsement(
                    seq=e.seq,
                    kind=e.kind,
                    at=e.at,
                    by=e.by,
                    reason=e.reason,
                    changes=json.loads(e.changes),
                    total_insured_value=_text(e.total_insured_value),
                    rule_premium_before=_text(e.rule_premium_before),
                    rule_premium_after=_text(e.rule_premium_after),
                    premium_before=str(e.premium_before),
                    premium_after=str(e.premium_after),
                    premium_change=str(e.premium_change),
                    audit_id=e.audit_id,
                )
                for e in changes
            ],
            cancelled_at=row.cancelled_at,
            returned_premium=_text(row.returned_premium),
        )


def _check_bindable(row: Any, today: datetime.date) -> None:
    quote_id = row.id
    if row.state == "bound":
        raise ApplicationError("bind.already_bound", f"quote {quote_id} is already bound")
    if row.state == "declined":
        who = f"by {row.reviewed_by}" if row.reviewed_by else "by the rules"
        raise ApplicationError(
            "bind.declined", f"quote {quote_id} was declined {who}, which is final"
        )
    if row.state == "referred":
        raise ApplicationError(
            "bind.referred",
            f"quote {quote_id} is referred and waits for an underwriter "
            f"(tiv review {quote_id} --approve|--decline --by NAME --reason TEXT)",
        )
    if today > row.valid_until:
        raise ApplicationError(
            "bind.expired",
            f"quote {quote_id} expired on {row.valid_until.isoformat()}: "
            "quote the application again",
        )


def _not_referred(row: Any) -> str:
    if row.state == "declined":
        return f"quote {row.id} is declined, which is final"
    if row.state == "bound":
        return f"quote {row.id} is already bound"
    if row.state == "approved":
        return f"quote {row.id} was already approved by {row.reviewed_by}"
    return f"quote {row.id} was accepted by the rules; only a referred quote is reviewed"


def _validity_days(given: Any, ref: str) -> int:
    if given is None:
        raise ApplicationError(
            "quote.no_terms",
            f"{ref} has no `{VALIDITY_PARAMETER}` parameter, so its quotes have no validity "
            "end; add it (and `clauses`) to a new version of the pack",
        )
    try:
        days = Decimal(str(given))
    except InvalidOperation:
        days = Decimal(-1)
    if days != days.to_integral_value() or days < 1:
        raise ApplicationError(
            "quote.no_terms", f"{ref}: `{VALIDITY_PARAMETER}` must be a whole number of days"
        )
    return int(days)


def _clauses(given: Any, ref: str) -> list[str]:
    if given is None:
        raise ApplicationError(
            "quote.no_terms",
            f"{ref} has no `{CLAUSES_PARAMETER}` parameter: the certificate of insurance "
            "must name the clauses; add them to a new version of the pack",
        )
    if isinstance(given, str):
        return [given]
    return [str(c) for c in given]


def _sum_insured(facts: Mapping[str, Any], tiv: Decimal) -> Decimal:
    declared = facts.get("sum_insured")
    return Decimal(str(declared)) if declared is not None else tiv


def _check_minor_units(amount: Decimal, valuation: Valuation, what: str = "premium") -> None:
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > valuation.currency_minor_units:
        raise ApplicationError(
            "input.premium",
            f"{what} {amount} has more decimals than {valuation.currency} allows "
            f"({valuation.currency_minor_units})",
        )


def _amount(given: Decimal | str | Any, what: str) -> Decimal:
    if isinstance(given, float):
        raise ApplicationError("input.amount", f"{what} must be a decimal string, not a float")
    try:
        amount = Decimal(str(given).strip())
    except InvalidOperation:
        raise ApplicationError("input.amount", f"{what} {given!r} is not a decimal") from None
    if not amount.is_finite():
        raise ApplicationError("input.amount", f"{what} {given!r} is not a finite decimal")
    return amount


def _required(text: str | None, what: str) -> str:
    cleaned = (text or "").strip()
    if not cleaned:
        raise ApplicationError("input.missing", f"{what} is required")
    return cleaned


def _reread(facts: Any) -> Any:
    """Facts to read a second time: a Shipment as its canonical mapping, else as given."""
    canonical = getattr(facts, "canonical", None)
    return canonical() if callable(canonical) else facts


def _text(amount: Decimal | None) -> str | None:
    return None if amount is None else str(amount)


def _new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16].upper()}"


def _stamp(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
