"""The ``forget_job``: run (or resume) a deletion request in Dagster.

Its config names the tenant and a **request id**, not the user id: Dagster keeps every run's config in
its run storage for good, which would make the run history a list of forgotten people. The request is
recorded first (``tally forget --tenant T --user U --queue``, or ``POST /v1/tenants/{t}/forget``), which
keeps the user id only in the request's work object until the request completes.
"""


from typing import Any

import dagster as dg


class ForgetConfig(dg.Config):
    tenant: str
    request_id: str


@dg.op(description="Run every unfinished step of a deletion request (idempotent; resumes after a failure).")
def forget_request(context: dg.OpExecutionContext, config: ForgetConfig, s3: dg.ResourceParam[Any],
                   redis: dg.ResourceParam[Any]) -> dg.Output[str]:
    from streaming.privacy.service import eraser_from_settings
    from streaming.settings import load_settings

    eraser = eraser_from_settings(load_settings(), redis_client=redis.client(), s3=s3.get_client())
    request = eraser.resume(eraser.requests.load(config.tenant, config.request_id))
    steps = request.to_json()["steps"]
    metadata: dict[str, Any] = {
        "request_id": request.request_id, "tenant": request.tenant, "status": request.status,
        "forgotten_lines": sum(int(r[3]) for r in request.forgotten),
        **{f"step_{name}": dg.MetadataValue.json(step.get("counts") or {}) for name, step in steps.items()},
    }
    context.log.info(f"deletion request {request.request_id} of tenant {request.tenant}: {request.status}")
    return dg.Output(request.status, metadata=metadata)


@dg.job(description="Forget a person everywhere: run the deletion request named in the config.")
def forget_job() -> None:
    forget_request()
