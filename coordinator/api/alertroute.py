"""``POST /v1/alerts/alertmanager``: Alertmanager's webhook starts failovers.

The route is outside the API's bearer token (Alertmanager holds its own secret: bearer or basic
auth, ``protocol.alertmanager.WebhookAuth``, read from a secret file). A request is checked, in
this order, and anything wrong answers 4xx with nothing changed: credentials (401), the body
(400/413, ``parse_webhook``). Then each firing alert is mapped to a fleet host by the host rule
and to the failover-configured jobs whose current primary it is (``coordinator.alerts.triage``;
resolved alerts never fail anything back). For each (alert, job) the ledger answers a repeat with
the job it already started; otherwise :func:`coordinator.failover.submit_failover` confirms with
its own evidence (the host's worker heartbeat expired in Redis), applies the policy (manual jobs
are recorded, not acted on) and the flap protection (``min_interval``), and starts the job. A
refusal is answered 200 with its reason (Alertmanager retries only 5xx), so the next repeat can
act once the evidence is there.
"""

from __future__ import annotations

from typing import Any, Final

import structlog

from coordinator.alerts import AlertLedger, triage
from coordinator.api.routes import ApiError, Request, Response, Router, json_response
from coordinator.api.views import ApiContext
from coordinator.config import parse_config
from coordinator.failover import submit_failover
from coordinator.rolestate import RoleStore, roles_of
from protocol.alertmanager import HostRule, WebhookAuth, parse_webhook
from protocol.errors import ConfigError, JobError, Unauthorized, WebhookError

log = structlog.get_logger(__name__)

PATH: Final = "/v1/alerts/alertmanager"


def on_alert(ctx: ApiContext, auth: WebhookAuth, rule: HostRule, req: Request) -> Response:
    try:
        auth.check(req.headers.get("authorization"))
    except Unauthorized as exc:
        raise ApiError(401, f"alertmanager webhook: {exc}") from None
    try:
        note = parse_webhook(req.body)
    except WebhookError as exc:
        raise ApiError(400, str(exc)) from None
    if ctx.config_path is None:
        raise ApiError(503, "the coordinator has no fleet config")
    try:
        text = ctx.config_path.read_text(encoding="utf-8")
        config = parse_config(text, source=str(ctx.config_path))
    except (OSError, ConfigError) as exc:
        raise ApiError(503, f"the fleet config is unreadable: {exc}") from None
    primaries = roles_of(config.jobs, RoleStore(ctx.client))
    sorted_ = triage(note, rule=rule, hosts=set(config.hosts), primaries=primaries)
    ledger = AlertLedger(ctx.client)
    answers: list[dict[str, Any]] = []
    for down in sorted_.down:
        for name in down.jobs:
            key = f"{down.key}:{name}"
            known = ledger.job_for(key)
            if known is not None:
                answers.append({"host": down.host, "job": name, "id": known,
                                "outcome": "repeat"})  # fmt: skip
                continue
            try:
                (result,) = submit_failover(
                    ctx.store, text, config, down.host, jobs=[name], from_alert=True,
                    failed_at=down.since.timestamp(), trigger="alertmanager",
                )  # fmt: skip
            except JobError as exc:
                answers.append({"host": down.host, "job": name, "outcome": "refused",
                                "reason": str(exc)})  # fmt: skip
                continue
            if result.job_id is None:
                answers.append({"host": down.host, "job": name, "outcome": "refused",
                                "reason": result.reason})  # fmt: skip
                continue
            job_id = ledger.claim(key, result.job_id)
            outcome = "started" if result.created and job_id == result.job_id else "running"
            answers.append({"host": down.host, "job": name, "id": job_id, "outcome": outcome})
    ignored = [{"key": i.key, "host": i.host, "reason": i.reason} for i in sorted_.ignored]
    log.info("alerts.received", alerts=len(note.alerts), acted=len(answers), ignored=len(ignored))
    return json_response({"failovers": answers, "ignored": ignored})


def add_alert_route(router: Router, ctx: ApiContext, auth: WebhookAuth, rule: HostRule) -> None:
    """Serve the webhook on ``router`` (public to the API token: it checks its own secret)."""
    router.add("POST", PATH, lambda req: on_alert(ctx, auth, rule, req), public=True)
