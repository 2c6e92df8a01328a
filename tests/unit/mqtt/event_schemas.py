"""Load schemas/events/v1 into a jsonschema registry (shared by unit and integration tests)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

ROOT = Path(__file__).resolve().parents[3] / "schemas" / "events" / "v1"
BASE = "https://dialgate.dev/schemas/events/v1/"


@cache
def _registry() -> Registry:
    resources = []
    for path in ROOT.rglob("*.schema.json"):
        doc = json.loads(path.read_text())
        resources.append((doc["$id"], Resource.from_contents(doc)))
    return Registry().with_resources(resources)


def validator(name: str) -> Draft202012Validator:
    schema = _registry().contents(BASE + name)
    return Draft202012Validator(schema, registry=_registry())


def errors(name: str, doc: Any) -> list[str]:
    return [e.message for e in validator(name).iter_errors(doc)]


def event_errors(doc: dict[str, Any]) -> list[str]:
    """Errors of an event against the schema of its own type."""
    return errors(f"{doc.get('type')}.schema.json", doc)
