"""The pipeline flow's last task: promote the version it just registered along register.auto_promote
(candidate, then staging, ...), each behind its gate, stopping at the first refusal.

A refusal is an outcome, not a crash: the task returns it, the flow run ends in a Completed state named
"Promotion refused" whose message names every failed gate and slice, and the run's artifacts hold the
slice table and a link to the "candidate against current" page (reports/promotion/<alias>/index.html).
"""

from __future__ import annotations

import json
from pathlib import Path

from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed, State

REGISTERED = Path("metrics/registered.json")
PAGES = Path("reports/promotion")
REFUSED = "Promotion refused"  # the name of a flow run's final state when a gate refused the new version


def _publish(root: Path, event: dict) -> None:
    """The attempt's slice table, its failures and its page as artifacts of the flow run."""
    from medr1.report.promotion_page import comparison_rows, write_comparison_page

    alias, verdict = event["alias"], "granted" if event["granted"] else "refused"
    failures = "".join(f"\n- {failure}" for failure in event["failed_gates"])
    create_markdown_artifact(key=f"medr1-promotion-{alias}", description=f"Promotion to {alias}: {verdict}",
                             markdown=f"# {event['version']} to {alias}: {verdict}\n\nagainst: "
                                      f"{event['previous'] or 'nothing (first version of this alias)'}{failures}")
    comparison = event["evidence"]["comparison"]
    if not comparison:
        return
    create_table_artifact(key=f"medr1-promotion-{alias}-slices", table=comparison_rows(event),
                          description=f"{event['version']} against {comparison['current_version']} ({alias}), "
                                      f"same {comparison['overall']['n']} questions, slice by slice")
    page = write_comparison_page(event, root / PAGES / alias)
    create_link_artifact(key=f"medr1-promotion-{alias}-page", link=page.as_uri(),
                         link_text=f"candidate against {alias}", description="per-slice differences with intervals")


@task(name="promote", cache_policy=NO_CACHE)
def promote_registered(root: Path) -> dict | State:
    """{"version", "granted": [aliases], "refused": None | {"alias", "failed_gates"}}."""
    from medr1.config import load_params
    from medr1.evaluate.version_predictions import reevaluator
    from medr1.registry.backends import open_store
    from medr1.registry.promotion import PromotionRefused, promote

    checkout = load_params(root / "params.yaml")
    params = checkout.register_
    if not params.auto_promote:
        return {"version": None, "granted": [], "refused": None}
    if not (root / REGISTERED).is_file():
        return Failed(message=f"nothing to promote: the register stage wrote no {REGISTERED} "
                              "(register.auto_promote names aliases)")
    version = json.loads((root / REGISTERED).read_text())["version"]
    store = open_store(params.store, base=root)
    outcome = {"version": version, "granted": [], "refused": None}
    for alias in params.auto_promote:
        try:
            event = promote(store, version, alias, params.gates, params.comparison,
                            reevaluator(store, checkout, root))
        except PromotionRefused as refusal:
            _publish(root, refusal.event)
            outcome["refused"] = {"alias": alias, "failed_gates": refusal.event["failed_gates"]}
            break
        _publish(root, event)
        outcome["granted"].append(alias)
    return outcome


def refusal_message(outcome: dict) -> str:
    refused = outcome["refused"]
    return (f"{outcome['version']} registered" + (f", promoted to {', '.join(outcome['granted'])}" if outcome["granted"]
                                                   else "") +
            f"; not promoted to {refused['alias']}: " + "; ".join(refused["failed_gates"]))
