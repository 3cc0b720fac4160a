"""`tally forget`: deletion requests (GDPR/CCPA) across every layer, their status and resumption.

Exit codes: 0 done, 1 the request failed or found data left (re-run it), 2 a configuration or input
error. Output names the request id, the tenant and counts, never the user id.
"""

from __future__ import annotations

import sys
from typing import Any

import click


def _print_request(console: Any, request: Any, as_json: bool) -> None:
    from rich.table import Table

    doc = request.to_json()
    if as_json:
        from orchestration.output import echo_json

        echo_json(doc)
        return
    console.print(f"request {doc['request_id']} tenant {doc['tenant']} subject "
                  f"{doc['subject'][:16]}… status {doc['status']} (asked {doc['requested_at']} by "
                  f"{doc['requested_by']}; suppressed from epoch ms {doc['since_ms']})", highlight=False)
    table = Table("step", "status", "finished", "what was done")
    for name, step in doc["steps"].items():
        counts = step.get("counts") or {}
        table.add_row(name, step.get("status", "pending"), step.get("finished_at") or "",
                      ", ".join(f"{k}={v}" for k, v in counts.items()))
    console.print(table)
    if doc["forgotten"]:
        console.print(f"{sum(r[3] for r in doc['forgotten']):,} archived lines forgotten in "
                      f"{len(doc['forgotten']):,} tenant × event type × minute cells (reconciliation reads them "
                      "from the manifests)")
    if doc["error"]:
        console.print(f"error: {doc['error']}", style="red")


def register(main: click.Group) -> None:
    """Add this domain's commands to the `tally` group."""
    from orchestration.cli import user_errors
    from orchestration.output import console, err_console

    @main.command("forget")
    @click.option("--tenant", default=None, help="Tenant id of the person to forget.")
    @click.option("--user", "user_id", default=None,
                  help="Their user id; every anonymous id stitched to it is forgotten too.")
    @click.option("--status", "status_of", default=None, metavar="REQUEST",
                  help="Show a request's progress and audit record instead (fr_...).")
    @click.option("--resume", is_flag=True, help="Finish every deletion request that did not complete.")
    @click.option("--list", "list_all", is_flag=True, help="List the deletion requests (of --tenant, or all).")
    @click.option("--json", "as_json", is_flag=True, help="Print the audit record as JSON.")
    @click.option("--queue", is_flag=True, help="Only record the request and print its id (run it with the "
                  "Dagster forget_job, or `tally forget --resume`).")
    @click.option("--no-rebuild", is_flag=True, help="Skip the dbt rebuild of the derived marts (the next build does it).")
    @user_errors
    def forget(tenant: str | None, user_id: str | None, status_of: str | None, resume: bool, list_all: bool,
               as_json: bool, queue: bool, no_rebuild: bool) -> None:
        """Forget a person everywhere: Redis segment entries, their lines in the S3 archive (objects
        rewritten, manifests updated), their rows in every warehouse table; suppress their new events.
        Counters keep their totals; reconciliation stays ok. Idempotent: run it again to resume.

        \b
        tally forget --tenant T --user U     start (or resume) the deletion of user U of tenant T
        tally forget --tenant T --user U --queue   record it only (Dagster's forget_job runs it)
        tally forget --status REQUEST        progress and audit record of a request
        tally forget --resume                finish every request that was interrupted
        tally forget --list [--tenant T]     every request (ids, status; no personal data)
        """
        from streaming.privacy.forget import DeletionBusy, DeletionIncomplete
        from streaming.privacy.requests import RequestStore, UnknownRequest
        from streaming.privacy.subject import BadRequest
        from streaming.settings import load_settings

        settings = load_settings()
        try:
            if status_of or list_all:
                from streaming.aws import aws_client
                from orchestration.environment import resolve_endpoints

                endpoint = resolve_endpoints(settings).aws_url("s3")
                store = RequestStore(aws_client("s3", settings.aws_region, endpoint), settings.bucket)
                if status_of:
                    _print_request(console, store.find(status_of), as_json)
                else:
                    for request in store.requests(tenant):
                        console.print(f"{request.request_id}  {request.tenant}  {request.status:8}  "
                                      f"{request.requested_at}  {request.subject[:16]}…", highlight=False)
                return
            from streaming.privacy.service import eraser_from_settings

            from orchestration.environment import resolve_endpoints

            eraser = eraser_from_settings(settings, rebuild=not no_rebuild, endpoints=resolve_endpoints(settings))
            if resume:
                done = eraser.resume_all()
                console.print(f"{len(done)} interrupted request(s) completed")
                for request in done:
                    _print_request(console, request, as_json)
                return
            if not tenant or user_id is None:
                raise click.UsageError("give --tenant and --user (or --status REQUEST, --resume, --list)")
            if queue:
                _print_request(console, eraser.create(tenant, user_id, requested_by="cli"), as_json)
                return
            _print_request(console, eraser.forget(tenant, user_id, requested_by="cli"), as_json)
        except (BadRequest, UnknownRequest, DeletionBusy) as exc:
            err_console.print(f"tally: {exc}", style="bold red", soft_wrap=True)
            sys.exit(2)
        except DeletionIncomplete as exc:
            err_console.print(f"tally: {exc}", style="bold red", soft_wrap=True)
            sys.exit(1)
