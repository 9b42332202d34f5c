"""Every example's full result, trace included, pinned as a snapshot.

A change to a figure, a trace step or a cited line shows up as a diff in review.
After a deliberate change, regenerate with:

    TIV_UPDATE_SNAPSHOTS=1 .venv/bin/python -m pytest tests/test_snapshots.py
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from engine import read_facts
from engine.evaluating.valuation import evaluate
from engine.explaining.trace import RecordingTracer
from engine.matching.registry import default_matcher
from tests.conftest import ROOT

SNAPSHOTS = Path(__file__).parent / "snapshots"
UPDATE = os.environ.get("TIV_UPDATE_SNAPSHOTS") == "1"


def _cases(shipped) -> list[tuple[str, object, object]]:
    cases = []
    for versions in shipped.packs.values():
        for pack in versions:
            for example in pack.examples:
                if example.example.expect.error is not None:
                    continue  # an expected error has no result to pin
                slug = re.sub(r"[^a-z0-9]+", "-", example.example.name.lower()).strip("-")
                cases.append((f"{pack.id}@{pack.version}--{slug}", pack, example))
    return cases


def test_example_results_match_their_snapshots(shipped) -> None:
    seen = set()
    for name, pack, example in _cases(shipped):
        shipment = read_facts(example.facts, shipped.facts_reference(pack), name=example.facts_name)
        result = evaluate(
            shipped,
            pack,
            shipment,
            as_of=example.example.as_of or shipment.date,
            matcher=default_matcher(),
            tracer=RecordingTracer(),
        )
        data = result.model_dump(mode="json")
        # Redacted: which backend matched, and the engine's own version, vary by
        # machine and release without changing any figure.
        data["matcher"] = data["engine_version"] = "<redacted>"
        text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
        path = SNAPSHOTS / f"{name}.json"
        seen.add(path)
        if UPDATE:
            SNAPSHOTS.mkdir(exist_ok=True)
            path.write_text(text, encoding="utf-8")
            continue
        assert path.exists(), f"no snapshot {path.name}: run with TIV_UPDATE_SNAPSHOTS=1"
        assert text == path.read_text(encoding="utf-8"), f"{path.name} differs"
    stale = set(SNAPSHOTS.glob("*.json")) - seen
    if UPDATE:
        for path in stale:
            path.unlink()
    else:
        assert not stale, f"snapshots without an example: {sorted(p.name for p in stale)}"


def test_snapshot_cites_real_lines() -> None:
    # Every `source` in the seed's snapshot points at a line of the pack that exists.
    data = json.loads(
        (SNAPSHOTS / "standard@1.0.0--seed-electronics-the-worked-example.json").read_text()
    )
    for step in data["trace"]:
        if step["source"] == "facts":
            continue
        path, line = step["source"].rsplit(":", 1)
        lines = (ROOT / path).read_text().splitlines()
        assert 1 <= int(line) <= len(lines), step
        if step["kind"] == "formula":
            assert lines[int(line) - 1].strip().startswith(f"{step['name']}:")
