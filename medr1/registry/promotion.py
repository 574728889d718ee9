"""Aliases (candidate, staging, production) behind gates, and the audit log of every promotion.

The audit log is one object per event, `audit/promotions/<name>/<UTC time>-<random>.json`,
written with put_if_absent: concurrent promotions each write their own key, so none is lost,
and nothing is ever rewritten. An alias points where its latest granted promotion put it.
Refused promotions are logged too, with the gates they failed.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from medr1.registry.store import ObjectStore
from medr1.registry.versions import RegistryError, created_by, find_version

if TYPE_CHECKING:  # medr1.config pulls in the model code; reading the log must stay light
    from medr1.config import PromotionGate, PromotionGates

ALIASES = ("candidate", "staging", "production")
AUDIT_PREFIX = "audit/promotions"


def gate_failures(manifest: dict, gate: PromotionGate) -> list[str]:
    """Each gate this version fails, named with the value it has and the one it needs."""
    metrics = manifest.get("metrics") or {}
    accuracy, base = metrics.get("accuracy"), metrics.get("base_accuracy")
    failures = []
    if accuracy is None:
        failures.append("min_accuracy: the manifest has no metrics.accuracy")
    elif accuracy < gate.min_accuracy:
        failures.append(f"min_accuracy: accuracy {accuracy:.3f} < {gate.min_accuracy:.3f}")
    if accuracy is None or base is None:
        failures.append("min_gain_over_base: the manifest lacks metrics.accuracy or metrics.base_accuracy")
    elif accuracy - base < gate.min_gain_over_base:
        failures.append(f"min_gain_over_base: gain {accuracy - base:+.3f} over base {base:.3f} "
                        f"< {gate.min_gain_over_base:+.3f}")
    if gate.require_validation and not (manifest.get("validation") or {}).get("success"):
        failures.append("require_validation: the data checks before its training did not pass (or were not recorded)")
    return failures


def _events(store: ObjectStore, name: str | None) -> list[dict]:
    keys = store.list(f"{AUDIT_PREFIX}/" + (f"{name}/" if name else ""))
    return [json.loads(store.get_bytes(key)) for key in keys if key.endswith(".json")]


def history(store: ObjectStore, name: str | None = None) -> list[dict]:
    """Every promotion event, granted or refused, oldest first."""
    return sorted(_events(store, name), key=lambda event: (event["at"], event["id"]))


def aliases(store: ObjectStore, name: str | None = None) -> dict[tuple[str, str], str]:
    """{(model name, alias): version} as the latest granted promotions left them."""
    current = {}
    for event in history(store, name):
        if event["granted"]:
            current[(event["name"], event["alias"])] = event["version"]
    return current


def aliases_by_version(store: ObjectStore) -> dict[tuple[str, str], list[str]]:
    """{(model name, version): [aliases it holds now]}."""
    held: dict[tuple[str, str], list[str]] = {}
    for (name, alias), version in aliases(store).items():
        held.setdefault((name, version), []).append(alias)
    return held


def promote(store: ObjectStore, version: str, alias: str, gates: PromotionGates) -> dict:
    """Point `alias` at `version` if it passes the alias's gate; log the attempt either way.

    Raises RegistryError naming every failed gate when refused."""
    if alias not in ALIASES:
        raise RegistryError(f"unknown alias {alias!r}: use one of {', '.join(ALIASES)}")
    manifest = find_version(store, version)
    gate = getattr(gates, alias)
    failures = gate_failures(manifest, gate)
    metrics = manifest.get("metrics") or {}
    now = datetime.now(UTC)
    event = {
        "id": uuid.uuid4().hex[:12],
        "at": now.isoformat(timespec="microseconds"),
        "by": created_by(),
        "name": manifest["name"],
        "version": manifest["version"],
        "alias": alias,
        "previous": aliases(store, manifest["name"]).get((manifest["name"], alias)),
        "granted": not failures,
        "failed_gates": failures,
        "gate": gate.model_dump(),
        "evidence": {"accuracy": metrics.get("accuracy"), "base_accuracy": metrics.get("base_accuracy"),
                     "validation_passed": (manifest.get("validation") or {}).get("success")},
    }
    key = f"{AUDIT_PREFIX}/{manifest['name']}/{now.strftime('%Y%m%dT%H%M%S.%fZ')}-{event['id']}.json"
    if not store.put_if_absent(key, json.dumps(event, indent=1, sort_keys=True).encode()):
        raise RegistryError(f"audit event {key} already exists in {store.url}; promote again")
    if failures:
        raise RegistryError(f"version {manifest['version']} cannot become {alias}: it fails "
                            + "; ".join(failures) + " (gates: register.gates in params.yaml)")
    return event
