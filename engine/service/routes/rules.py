"""GET /v1/packs, /v1/packs/{id}, /v1/packs/{id}/{version} and /v1/countries."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, Path

from engine.errors import (
    Problem,
)
from engine.service.auth import Key
from engine.service.context import Service
from engine.service.errors import ApiError
from engine.service.models import (
    CountryList,
    CountrySummary,
    CountryVersion,
    PackList,
    PackSummary,
    PackText,
)
from engine.service.routes.common import (
    errors_doc,
    pack_summaries,
    pack_version,
    respond,
    visible_pack,
)


def install(app: FastAPI, service: Service) -> None:
    @app.get(
        "/v1/packs",
        response_model=PackList,
        summary="The packs this key may use",
        responses=errors_doc(401),
        tags=["rules"],
    )
    async def get_packs(key: Key) -> Any:
        snapshot = service.state.current
        packs = [s.model_dump(mode="json") for s in pack_summaries(snapshot, key)]
        return respond({"rules_id": snapshot.rules_id, "packs": packs}, snapshot)

    @app.get(
        "/v1/packs/{pack_id}",
        response_model=PackSummary,
        summary="One pack's versions and windows",
        responses=errors_doc(401, 404),
        tags=["rules"],
    )
    async def get_pack(key: Key, pack_id: Annotated[str, Path()]) -> Any:
        snapshot = service.state.current
        visible_pack(snapshot, key, pack_id)
        versions = [pack_version(p) for p in snapshot.rules.packs[pack_id]]
        summary = PackSummary(id=pack_id, versions=versions)
        return respond(summary.model_dump(mode="json"), snapshot)

    @app.get(
        "/v1/packs/{pack_id}/{version}",
        response_model=PackText,
        summary="One pack version: its YAML, byte for byte, and sha256",
        responses=errors_doc(401, 404),
        tags=["rules"],
    )
    async def get_pack_version(
        key: Key, pack_id: Annotated[str, Path()], version: Annotated[str, Path()]
    ) -> Any:
        snapshot = service.state.current
        visible_pack(snapshot, key, pack_id)
        for pack in snapshot.rules.packs[pack_id]:
            if pack.version == version:
                text = snapshot.texts[pack.source].decode("utf-8")
                out = PackText(**pack_version(pack).model_dump(), yaml=text)
                return respond(out.model_dump(mode="json"), snapshot)
        listed = ", ".join(p.version for p in snapshot.rules.packs[pack_id])
        raise ApiError(
            404,
            "no_policy",
            Problem(
                "policy.unknown_version", f"{pack_id} has no version {version} (versions: {listed})"
            ),
            rules_id=snapshot.rules_id,
        )

    @app.get(
        "/v1/countries",
        response_model=CountryList,
        summary="Country duty rules: versions and effective windows",
        description="Country rules are shared reference data: every key may read them.",
        responses=errors_doc(401),
        tags=["rules"],
    )
    async def get_countries(key: Key) -> Any:
        snapshot = service.state.current
        countries = [
            CountrySummary(
                id=country_id,
                versions=[
                    CountryVersion(
                        id=c.id,
                        version=c.version,
                        status=c.status,
                        title=c.title,
                        effective_from=c.effective_from,
                        effective_to=c.effective_to,
                        sha256=c.sha256,
                        source=c.source,
                        customs_union=c.customs_union,
                    )
                    for c in versions
                ],
            ).model_dump(mode="json")
            for country_id, versions in snapshot.rules.duty_rules.items()
        ]
        return respond({"rules_id": snapshot.rules_id, "countries": countries}, snapshot)
