"""The workbench's routes: `ui_router(settings, current)` builds them.

Pages are rendered on the server (Jinja2, autoescaped) and work without JavaScript,
except the impact page's progress bar, which polls (and falls back to a page refresh).
Every page asks `access` for the caller's key first: no key, the login page. What a
key may not see is answered exactly as what does not exist.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from markupsafe import Markup

from engine.api import value
from engine.errors import FactsError, TivError
from engine.loading.snapshot import Snapshot
from engine.service.settings import ApiKey, Settings
from engine.service.ui import charts, compliance, rulebook, simulator
from engine.service.ui.access import COOKIE, Access, form_fields
from engine.service.ui.jobs import Jobs

TEMPLATES = Path(__file__).parent / "templates"
MAX_FORM_BYTES = 4 * 1024 * 1024  # a pasted corpus fits; anything larger is refused
MAX_CORPUS = 20_000
_HEADERS = {
    # Pages hold one tenant's data: never cached, never framed, scripts only from here.
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def ui_router(settings: Settings, current: Callable[[], Snapshot]) -> APIRouter:
    """The /ui pages. `current()` gives the rules in service now (a reload swaps them)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["money"] = _money
    access = Access(settings)
    jobs = Jobs()
    router = APIRouter(prefix="/ui", include_in_schema=False)

    def page(
        request: Request, template: str, key: ApiKey | None, status: int = 200, **context: Any
    ) -> HTMLResponse:
        snapshot = current()
        visible = rulebook.visible_files(snapshot, key) if key else set()

        def src(source: str | None) -> Markup:
            """`file:line` as a link to that line of the file view, when the key may read it."""
            text = source or ""
            where = rulebook.split_source(text)
            if where is None or where[0] not in visible:
                return Markup("<code>{}</code>").format(text)
            file, line = where
            href = f"/ui/files/{quote(file)}#L{line}"
            return Markup('<a class="src" href="{}"><code>{}</code></a>').format(href, text)

        html = env.get_template(template).render(
            key=key,
            open=access.open,
            path=request.url.path,
            rules_id=snapshot.rules_id,
            src=src,
            **context,
        )
        return HTMLResponse(html, status_code=status, headers=_HEADERS)

    def login_redirect(request: Request) -> RedirectResponse:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/ui/login?next={quote(target)}", status_code=303)

    def too_large(request: Request, key: ApiKey | None) -> HTMLResponse:
        limit = f"{MAX_FORM_BYTES // (1024 * 1024)} MiB"
        message = f"The form is over {limit}; send fewer shipments, or use `tiv impact`."
        return page(request, "message.html", key, 413, title="Too large", message=message)

    def not_found(request: Request, key: ApiKey, message: str) -> HTMLResponse:
        return page(request, "message.html", key, 404, title="Not found", message=message)

    # --- signing in -------------------------------------------------------------

    @router.get("/login")
    async def login_form(request: Request, next: str = "/ui") -> Response:
        return page(request, "login.html", None, title="Sign in", next=_local(next), error="")

    @router.post("/login")
    async def login(request: Request) -> Response:
        form = await _form(request)
        if form is None:
            return too_large(request, None)
        target = _local(form.get("next", "/ui"))
        token = form.get("key", "").strip()
        if access.check(token) is None and not access.open:
            return page(
                request,
                "login.html",
                None,
                401,
                title="Sign in",
                next=target,
                error="Unknown API key.",
            )
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            COOKIE,
            token,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/ui",
        )
        return response

    @router.post("/logout")
    async def logout() -> Response:
        response = RedirectResponse("/ui/login", status_code=303)
        response.delete_cookie(COOKIE, path="/ui")
        return response

    # --- rule browser -------------------------------------------------------------

    @router.get("")
    async def home(request: Request) -> Response:
        key = access.key_of(request)
        if key is None:
            return login_redirect(request)
        snapshot = current()
        return page(
            request,
            "rules.html",
            key,
            title="Rules",
            packs=rulebook.pack_rows(snapshot, key, settings.rules),
            countries=rulebook.country_rows(snapshot, settings.rules),
            loaded_at=snapshot.loaded_at,
        )

    @router.get("/packs/{pack_id}/{version}")
    async def pack_page(request: Request, pack_id: str, version: str) -> Response:
        key = access.key_of(request)
        if key is None:
            return login_redirect(request)
        snapshot = current()
        pack = _find_pack(snapshot, key, pack_id, version)
        if pack is None:
            return not_found(request, key, f"No pack {pack_id}@{version}.")
        view = rulebook.pack_view(snapshot, pack, settings.rules)
        return page(request, "pack.html", key, title=f"{pack_id}@{version}", pack=view)

    @router.get("/files/{file:path}")
    async def file_page(request: Request, file: str) -> Response:
        key = access.key_of(request)
        if key is None:
            return login_redirect(request)
        snapshot = current()
        if file not in rulebook.visible_files(snapshot, key):
            return not_found(request, key, f"No rule file {file}.")
        lines = snapshot.texts[file].decode("utf-8", errors="replace").splitlines()
        return page(request, "file.html", key, title=file, file=file, lines=lines)

    # --- simulator ----------------------------------------------------------------

    @router.get("/simulate")
    async def simulate_form(request: Request, pack: str = "", example: int = -1) -> Response:
        key = access.key_of(request)
        if key is None:
            return login_redirect(request)
        snapshot = current()
        form: dict[str, str] = {"duties_mode": "declared", "pack": pack}
        chosen = _latest(snapshot, key, pack)
        if chosen is not None and 0 <= example < len(chosen.examples):
            facts = chosen.examples[example].facts
            data = simulator.parse_pasted(facts) if isinstance(facts, str) else facts
            form.update(simulator.form_from_facts(data or {}))
        return simulate_page(request, key, form, [], {}, [])

    @router.post("/simulate")
    async def simulate(request: Request) -> Response:
        key = access.key_of(request)
        if key is None:
            return login_redirect(request)
        form = await _form(request)
        if form is None:
            return too_large(request, key)
        snapshot = current()
        errors: dict[str, list[str]] = {}
        general: list[str] = []
        pasted = form.get("source") == "paste"
        facts: Any
        if pasted:
            text = form.get("facts_text", "")
            parsed = simulator.parse_pasted(text)
            if parsed is None:
                general.append("The pasted text is not a JSON or YAML mapping of shipment facts.")
                return simulate_page(request, key, form, [], errors, general, 422)
            kept = {k: v for k, v in form.items() if not simulator.is_fact(k)}
            form = {**kept, **simulator.form_from_facts(parsed), "facts_text": text}
            facts = text
        else:
            facts = simulator.facts_from_form(form)
        runs = []
        for prefix in ("", "compare_"):
            # A chosen version names its pack (`standard@1.0.0`); else the pack's in effect.
            pinned = form.get(f"{prefix}version", "").strip()
            pack_id, _, version = pinned.partition("@")
            if not pinned:
                pack_id = form.get(f"{prefix}pack", "").strip()
            if not pack_id:
                continue
            as_of_text = form.get("as_of", "").strip()
            if not _visible(snapshot, key, pack_id):
                general.append(f"No policy pack `{pack_id}`.")
                continue
            try:
                as_of = datetime.date.fromisoformat(as_of_text) if as_of_text else None
            except ValueError:
                errors.setdefault("as_of", []).append("must be a date, YYYY-MM-DD")
                continue
            policy = f"{pack_id}@{version}" if version else pack_id

            def run(policy: str = policy, as_of: Any = as_of, draft: bool = bool(version)) -> Any:
                return value(snapshot.rules, facts, policy=policy, as_of=as_of, allow_draft=draft)

            try:
                result = await anyio.to_thread.run_sync(run)
            except FactsError as error:
                for problem in error.problems:
                    path = problem.location.path
                    field = simulator.field_of(path, form) if path else ""
                    if field:
                        errors.setdefault(field, []).append(problem.message)
                    else:
                        general.append(f"{path or problem.location}: {problem.message}")
                break  # the same facts fail the same way under the other pack
            except TivError as error:
                general.extend(f"{policy}: {p}" for p in error.problems)
                continue
            runs.append(_result_view(result))
        status = 422 if errors or general else 200
        return simulate_page(request, key, form, runs, errors, general, status)

    def simulate_page(
        request: Request,
        key: ApiKey,
        form: Mapping[str, str],
        runs: list[dict[str, Any]],
        errors: Mapping[str, list[str]],
        general: list[str],
        status: int = 200,
    ) -> HTMLResponse:
        snapshot = current()
        packs = {
            pid: [p.version for p in versions]
            for pid, versions in snapshot.rules.packs.items()
            if key.may_use(pid)
        }
        chosen = _latest(snapshot, key, form.get("pack", "")) or _latest(
            snapshot, key, next(iter(packs), "")
        )
        examples = (
            [(i, rulebook.example_name(c)) for i, c in enumerate(chosen.examples)] if chosen else []
        )
        return page(
            request,
            "simulate.html",
            key,
            status,
            title="Simulator",
            form=form,
            packs=packs,
            rows=simulator.ROWS,
            goods=simulator.GOODS,
            charges=simulator.CHARGES,
            duties=simulator.DUTIES,
            runs=runs,
            errors=errors,
            general=general,
            example_pack=chosen.id if chosen else "",
            examples=examples,
        )

    # --- diff and impact ------------------------------------------------------------

    def refs(snapshot: Snapshot, key: ApiKey) -> list[str]:
        return [p.ref for pid, vs in snapshot.rules.packs.items() if key.may_use(pid) for p in vs]

    @router.get("/diff")
    async def diff_page(request: Request, before: str = "", after: str = "") -> Response:
        key = access.key_of(request)
        if key is None:
            return login_redirect(request)
        snapshot = current()
        choices = refs(snapshot, key)
        result, error = None, ""
        if before and after:
            if before not in choices or after not in choices:
                error = "Choose two pack versions from the lists."
            else:
                try:
                    result = await anyio.to_thread.run_sync(
                        lambda: compliance.diff_packs(
                            snapshot.rules, snapshot.source(), before, after
                        )
                    )
                except (TivError, ValueError) as exc:
                    error = str(exc)
        sections = compliance.SECTIONS
        return page(
            request,
            "diff.html",
            key,
            422 if error else 200,
            title="Diff",
            choices=choices,
            before=before,
            after=after,
            diff=result,
            error=error,
            sections=sections,
        )

    @router.get("/impact")
    async def impact_form(request: Request) -> Response:
        key = access.key_of(request)
        if key is None:
            return login_redirect(request)
        return impact_page(request, key, {}, "")

    def impact_page(
        request: Request, key: ApiKey, form: Mapping[str, str], error: str, status: int = 200
    ) -> HTMLResponse:
        return page(
            request,
            "impact.html",
            key,
            status,
            title="Impact",
            choices=refs(current(), key),
            form=form,
            error=error,
        )

    @router.post("/impact")
    async def impact_start(request: Request) -> Response:
        key = access.key_of(request)
        if key is None:
            return login_redirect(request)
        form = await _form(request)
        if form is None:
            return too_large(request, key)
        snapshot = current()
        choices = refs(snapshot, key)
        before, after = form.get("before", ""), form.get("after", "")
        if before not in choices or after not in choices:
            return impact_page(request, key, form, "Choose two pack versions.", 422)
        corpus_text = form.get("corpus", "").strip()
        shipments: Any
        if corpus_text:
            shipments = [line for line in corpus_text.splitlines() if line.strip()]
            label = f"{len(shipments)} pasted shipment(s)"
        else:
            try:
                count, seed = int(form.get("count", "")), int(form.get("seed", ""))
            except ValueError:
                return impact_page(
                    request, key, form, "Give the number of shipments and a seed.", 422
                )
            if not 1 <= count <= MAX_CORPUS:
                return impact_page(
                    request, key, form, f"Generate between 1 and {MAX_CORPUS} shipments.", 422
                )
            shipments = compliance.generate_corpus(count, seed)
            label = f"{count} generated shipment(s), seed {seed}"
        job = await anyio.to_thread.run_sync(
            lambda: jobs.start(key.name, snapshot.texts, before, after, shipments, label)
        )
        return RedirectResponse(f"/ui/impact/{job.id}", status_code=303)

    @router.get("/impact/{job_id}")
    async def impact_job(request: Request, job_id: str) -> Response:
        key = access.key_of(request)
        if key is None:
            return login_redirect(request)
        job = jobs.get(job_id, key.name)
        if job is None:
            return not_found(request, key, "No such impact run (runs are kept until a restart).")
        view = _impact_view(job)
        return page(request, "impact_job.html", key, title="Impact run", job=job, **view)

    @router.get("/impact/{job_id}/status")
    async def impact_status(request: Request, job_id: str) -> Response:
        key = access.key_of(request)
        job = jobs.get(job_id, key.name) if key else None
        if job is None:
            return JSONResponse({"state": "unknown"}, status_code=404, headers=_HEADERS)
        return JSONResponse(job.status(), headers=_HEADERS)

    @router.post("/impact/{job_id}/cancel")
    async def impact_cancel(request: Request, job_id: str) -> Response:
        key = access.key_of(request)
        if key is None:
            return login_redirect(request)
        job = jobs.get(job_id, key.name)
        if job is not None:
            job.cancel.set()
        return RedirectResponse(f"/ui/impact/{job_id}", status_code=303)

    # --- audit ------------------------------------------------------------------------

    def open_log() -> Any:
        return compliance.AuditLog(settings.audit, create=False) if settings.audit else None

    @router.get("/audit")
    async def audit_page(
        request: Request, shipment: str = "", pack: str = "", since: str = "", until: str = ""
    ) -> Response:
        key = access.key_of(request)
        if key is None:
            return login_redirect(request)
        if settings.audit is None:
            return page(
                request,
                "message.html",
                key,
                title="Audit",
                message="This server keeps no audit log: start it with --audit FILE.",
            )

        def read() -> tuple[Any, list[Any], str]:
            with open_log() as log:
                report = log.verify()
                try:
                    records = list(log)
                except compliance.AuditError as error:
                    return report, [], str(error)
            return report, records, ""

        try:
            report, records, problem = await anyio.to_thread.run_sync(read)
        except compliance.AuditError as error:
            return page(request, "message.html", key, 500, title="Audit", message=str(error))
        mine = [r for r in records if key.may_use(compliance.record_pack(r))]
        packs = sorted({compliance.record_pack(r) for r in mine})
        rows = [
            r
            for r in mine
            if (not shipment or shipment.lower() in str(r.facts.get("id", "")).lower())
            and (not pack or compliance.record_pack(r) == pack)
            and (not since or r.recorded_at[:10] >= since)
            and (not until or r.recorded_at[:10] <= until)
        ]
        bad = report.first_bad
        bad_visible = bad is not None and any(r.seq == bad.seq for r in mine)
        return page(
            request,
            "audit.html",
            key,
            title="Audit",
            report=report,
            bad_visible=bad_visible,
            problem=problem,
            rows=list(reversed(rows))[:500],
            matched=len(rows),
            packs=packs,
            filters={"shipment": shipment, "pack": pack, "since": since, "until": until},
            verifies=compliance.record_verifies,
            record_pack=compliance.record_pack,
        )

    @router.get("/audit/{record_id}")
    async def record_page(request: Request, record_id: str) -> Response:
        key = access.key_of(request)
        if key is None:
            return login_redirect(request)
        if settings.audit is None or not _is_record_id(record_id):
            return not_found(request, key, f"No audit record {record_id}.")

        def read() -> tuple[Any, Any]:
            with open_log() as log:
                return log.get(record_id), log.verify()

        try:
            record, report = await anyio.to_thread.run_sync(read)
        except compliance.AuditError:
            return not_found(request, key, f"No audit record {record_id}.")
        if not key.may_use(compliance.record_pack(record)):
            return not_found(request, key, f"No audit record {record_id}.")
        replayed, replay_error = None, ""
        try:
            replayed = await anyio.to_thread.run_sync(
                lambda: compliance.replay_record(record, settings.rules)
            )
        except compliance.AuditError as error:
            replay_error = str(error)
        bad = report.first_bad
        try:
            valuation = _result_view(record.valuation())
        except compliance.AuditError as error:
            valuation, replay_error = None, replay_error or str(error)
        return page(
            request,
            "record.html",
            key,
            title=f"Audit record {record.seq}",
            record=record,
            verifies=compliance.record_verifies(record),
            chain_bad=bad,
            after_break=bad is not None and bad.seq is not None and record.seq >= bad.seq,
            replayed=replayed,
            replay_error=replay_error,
            run=valuation,
            pack=compliance.record_pack(record),
        )

    return router


# --- helpers ------------------------------------------------------------------------


async def _form(request: Request) -> dict[str, str] | None:
    """The posted form, or None when it is over MAX_FORM_BYTES (never half of it)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_FORM_BYTES:
            return None
        chunks.append(chunk)
    return form_fields(b"".join(chunks))


def _local(target: str) -> str:
    """Only a path inside the workbench: a login never sends the browser elsewhere."""
    return target if target.startswith("/ui") and "//" not in target else "/ui"


def _visible(snapshot: Snapshot, key: ApiKey, pack_id: str) -> bool:
    return pack_id in snapshot.rules.packs and key.may_use(pack_id)


def _find_pack(snapshot: Snapshot, key: ApiKey, pack_id: str, version: str) -> Any:
    if not _visible(snapshot, key, pack_id):
        return None
    return next((p for p in snapshot.rules.packs[pack_id] if p.version == version), None)


def _latest(snapshot: Snapshot, key: ApiKey, pack_id: str) -> Any:
    return snapshot.rules.packs[pack_id][-1] if _visible(snapshot, key, pack_id) else None


def _is_record_id(text: str) -> bool:
    return len(text) == 36 and all(c in "0123456789abcdef-" for c in text)


def _money(text: str | Decimal | None) -> str:
    if text is None or text == "":
        return "—"
    try:
        return charts.grouped(Decimal(text))
    except (InvalidOperation, ValueError):
        return str(text)


def _result_view(result: Any) -> dict[str, Any]:
    """A valuation with its waterfall drawn (none when a masked audit record hides a figure)."""
    steps = [(name, amount) for name, amount in result.components.items()]
    total = ("TIV", result.total_insured_value)
    if not all(isinstance(amount, Decimal) for _, amount in [*steps, total]):
        return {"v": result, "chart": ""}
    chart = charts.waterfall(
        f"{result.policy.id}@{result.policy.version}: from invoice to TIV", steps, total
    )
    return {"v": result, "chart": Markup(chart)}


def _impact_view(job: Any) -> dict[str, Any]:
    if job.report is None:
        return {"charts": [], "movers": []}
    found = []
    for figure, attribute in (("TIV", "tiv_change"), ("Premium", "premium_change")):
        by_currency: dict[str, list[Decimal]] = {}
        for d in job.details:
            if getattr(d, attribute):
                by_currency.setdefault(d.currency, []).append(Decimal(getattr(d, attribute)))
        # One chart per currency: changes in different currencies do not share an axis.
        for currency, changes in sorted(by_currency.items(), key=lambda kv: -len(kv[1]))[:4]:
            title = f"{figure} change per shipment, {currency} ({len(changes)} shipments)"
            found.append(Markup(charts.histogram(title, changes)))
    movers = sorted(
        (d for d in job.details if d.tiv_change),
        key=lambda d: abs(Decimal(d.tiv_change)),
        reverse=True,
    )[:20]
    flipped = [d for d in job.details if d.decision_before != d.decision_after][:50]
    return {"charts": found, "movers": movers, "flipped": flipped}
