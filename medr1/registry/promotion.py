"""Aliases (candidate, staging, production) behind gates, and the audit log of every promotion.

The audit log is one object per event, never rewritten. A granted promotion is generation g+1 of its
alias, `audit/promotions/<name>/<alias>/granted/<g+1, 8 digits>.json`, written with put_if_absent:
the conditional write is the compare-and-swap, so of two promotions of one alias at once, one writes
generation g+1 and the other finds it taken, compares itself again with the version that now holds the
alias, and is granted g+2 or refused. Every granted event was compared with the version it replaced
(its `previous`). Refused attempts are `.../<alias>/refused/<UTC time>-<random>.json`, with the gates
they failed and the evidence. An alias points at its highest generation (stores written before
generations existed: its latest granted event).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from medr1.registry.comparison import Reevaluate, compare_with_current, comparison_failures
from medr1.registry.store import ObjectStore
from medr1.registry.versions import RegistryError, created_by, find_version

if TYPE_CHECKING:  # medr1.config pulls in the model code; reading the log must stay light
    from medr1.config import ComparisonSettings, PromotionGate, PromotionGates

ALIASES = ("candidate", "staging", "production")
AUDIT_PREFIX = "audit/promotions"
ATTEMPTS = 5  # promotions of one alias that may overtake this one before it gives up


class PromotionRefused(RegistryError):
    """A gate refused the promotion; `event` is the audit event logged for it (gates failed, evidence)."""

    def __init__(self, message: str, event: dict):
        super().__init__(message)
        self.event = event


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


def _current(events: list[dict]) -> dict[tuple[str, str], dict]:
    """{(name, alias): the granted event it stands on}: its highest generation, else (older logs) its latest grant."""
    current: dict[tuple[str, str], dict] = {}
    for event in events:  # oldest first
        if not event["granted"]:
            continue
        held = current.get((event["name"], event["alias"]))
        if held is None or event.get("generation", 0) >= held.get("generation", 0):
            current[(event["name"], event["alias"])] = event
    return current


def aliases(store: ObjectStore, name: str | None = None) -> dict[tuple[str, str], str]:
    """{(model name, alias): version} as the granted promotions left them."""
    return {key: event["version"] for key, event in _current(history(store, name)).items()}


def aliases_by_version(store: ObjectStore) -> dict[tuple[str, str], list[str]]:
    """{(model name, version): [aliases it holds now]}."""
    held: dict[tuple[str, str], list[str]] = {}
    for (name, alias), version in aliases(store).items():
        held.setdefault((name, version), []).append(alias)
    return held


def _standing(store: ObjectStore, name: str, alias: str) -> tuple[int, str | None]:
    """(generation, version) the alias stands on now; (0, None) when nothing was ever promoted to it. One listing
    and one read: the highest generation's key sorts last (8 digits); only a log from before generations is read
    whole."""
    granted = [key for key in store.list(f"{AUDIT_PREFIX}/{name}/{alias}/granted/") if key.endswith(".json")]
    if granted:
        event = json.loads(store.get_bytes(max(granted)))
        return event["generation"], event["version"]
    event = _current(history(store, name)).get((name, alias))
    return (0, event["version"]) if event else (0, None)


def _compares(gate: PromotionGate) -> bool:
    return gate.must_beat_current or gate.max_slice_drop is not None


def _stamp() -> tuple[str, str, str]:
    now = datetime.now(UTC)
    return uuid.uuid4().hex[:12], now.isoformat(timespec="microseconds"), now.strftime("%Y%m%dT%H%M%S.%fZ")


def promote(store: ObjectStore, version: str, alias: str, gates: PromotionGates, settings: ComparisonSettings,
            reevaluate: Reevaluate | None = None) -> dict:
    """Point `alias` at `version` if it passes the alias's gate; log the attempt either way.

    The gate's absolute numbers first, then (must_beat_current, max_slice_drop) a paired comparison with
    the version the alias points at now, on the candidate's test questions. Raises PromotionRefused
    naming every failed gate and failing slice when refused."""
    if alias not in ALIASES:
        raise RegistryError(f"unknown alias {alias!r}: use one of {', '.join(ALIASES)}")
    manifest = find_version(store, version)
    name, gate = manifest["name"], getattr(gates, alias)
    for _ in range(ATTEMPTS):
        generation, current = _standing(store, name, alias)
        failures = gate_failures(manifest, gate)
        comparison = None
        if _compares(gate) and current not in (None, manifest["version"]):
            comparison = compare_with_current(store, manifest, find_version(store, current), settings, reevaluate)
            failures += comparison_failures(comparison, gate)
        metrics = manifest.get("metrics") or {}
        event_id, at, stamp = _stamp()
        event = {
            "id": event_id, "at": at, "by": created_by(), "name": name, "version": manifest["version"],
            "alias": alias, "previous": current, "granted": not failures, "failed_gates": failures,
            "generation": None if failures else generation + 1, "gate": gate.model_dump(),
            "evidence": {"accuracy": metrics.get("accuracy"), "base_accuracy": metrics.get("base_accuracy"),
                         "validation_passed": (manifest.get("validation") or {}).get("success"),
                         "comparison": comparison},
        }
        data = json.dumps(event, indent=1, sort_keys=True).encode()
        if failures:
            key = f"{AUDIT_PREFIX}/{name}/{alias}/refused/{stamp}-{event_id}.json"
            if not store.put_if_absent(key, data):
                raise RegistryError(f"audit event {key} already exists in {store.url}; promote again")
            raise PromotionRefused(f"version {manifest['version']} cannot become {alias}: it fails "
                                   + "; ".join(failures) + " (gates: register.gates in params.yaml)", event)
        key = f"{AUDIT_PREFIX}/{name}/{alias}/granted/{generation + 1:08d}.json"
        if store.put_if_absent(key, data) and json.loads(store.get_bytes(key))["id"] == event_id:
            return event
        # Another promotion of this alias took generation + 1 first: compare again with what it put there.
    raise RegistryError(f"{alias} of {name} changed {ATTEMPTS} times while {manifest['version']} was being compared "
                        "with it: promote again")
