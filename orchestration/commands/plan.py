"""`tally plan`: capacity and monthly cost for a load, from tally's measured figures and a dated price table."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import click

_NUMBERS: dict[str, type] = {
    "events_per_day": float, "peak_multiplier": float, "tenants": int, "event_bytes": float, "dedup_horizon_s": int,
    "archive_retention_days": int, "refresh_minutes": int, "tenant_skew": float, "events_per_visitor_hour": float,
    "pages": int, "malformed_rate": float, "dead_letter_days": int, "stream_retention_hours": int, "redis_replicas": int,
}


def _number(name: str, raw: str, kind: type) -> float | int:
    from streaming.settings import SettingError

    option = "--" + name.replace("_", "-")
    try:
        value = float(raw.replace("_", "").replace(",", ""))
    except ValueError:
        raise SettingError(option, raw, "is not a number", f"give {option} a number, e.g. {option} 50000000") from None
    if kind is int:
        if not math.isfinite(value) or value != int(value):
            raise SettingError(option, raw, "is not a whole number", f"give {option} a whole number")
        return int(value)
    return value


def register(main: click.Group) -> None:
    from orchestration.cli import _settings, console, user_errors

    @main.command("plan")
    @click.option("--preset", default=None, help="startup (1M events/day), growth (50M) or enterprise (1B).")
    @click.option("--events-per-day", default=None, help="Events a day (every record the collectors write).")
    @click.option("--peak-multiplier", default=None, help="Peak rate over the day's average (default 10).")
    @click.option("--tenants", default=None, help="Tenants (their traffic on a Zipf curve).")
    @click.option("--event-bytes", default=None, help="Mean bytes of an event record (default: the generator's, measured).")
    @click.option("--dedup-horizon-s", default=None, help="Dedup horizon (default TALLY_DEDUP_HORIZON_S).")
    @click.option("--archive-retention-days", default=None, help="How long the archive is planned for (default 365).")
    @click.option("--refresh-minutes", default=None, help="Warehouse build cadence in minutes (default 60).")
    @click.option("--tenant-skew", default=None, help="Zipf exponent of the tenants' shares (default 1.1).")
    @click.option("--events-per-visitor-hour", default=None, help="Default: measured on the generator's traffic.")
    @click.option("--pages", default=None, help="Distinct page paths per tenant (top pages).")
    @click.option("--malformed-rate", default=None, help="Fraction of records dead-lettered (default 0.001).")
    @click.option("--dead-letter-days", default=None, help="Days dead letters stay in Redis before you clear them (default 30).")
    @click.option("--stream-retention-hours", default=None, help="Kinesis retention (default 24).")
    @click.option("--redis-replicas", default=None, help="Replicas per Redis shard (default 1).")
    @click.option("--arch", "architecture", default="arm64", show_default=True, help="Lambda and Fargate architecture.")
    @click.option("--budget", default="50000", show_default=True, help="Monthly ceiling the total is set against (USD).")
    @click.option("--format", "fmt", default="text", show_default=True, help="text, json or html.")
    @click.option("--out", type=click.Path(path_type=Path), default=None,
                  help="Write the json/html here (html default: $TALLY_HOME/plans/plan.html).")
    @click.option("--prices", type=click.Path(path_type=Path), default=None,
                  help="JSON overrides of the price table (default TALLY_PLAN_PRICES).")
    @click.option("--figures", type=click.Path(path_type=Path), default=None,
                  help="Measured figures (default: bench/results.json, written by `make bench`).")
    @click.option("--emit-params", type=click.Path(path_type=Path), default=None,
                  help="Write deploy/tally.yaml's parameter file for this plan here.")
    @click.option("--param", "params", multiple=True, help="KEY=VALUE for --emit-params (VpcId, ContainerImage, ...).")
    @user_errors
    def plan_command(preset: str | None, architecture: str, budget: str, fmt: str, out: Path | None,
                     prices: Path | None, figures: Path | None, emit_params: Path | None, params: tuple[str, ...],
                     **raw: str | None) -> None:
        """Capacity and monthly cost per component for a load (a preset or your numbers)."""
        from streaming.plan import load as loads
        from streaming.plan.capacity import plan
        from streaming.plan.figures import load_figures
        from streaming.plan.prices import load_prices
        from streaming.plan.render import as_dict, print_text, render_html
        from streaming.settings import SettingError

        settings = _settings()
        if fmt not in ("text", "json", "html"):
            raise SettingError("--format", fmt, "is not a format", "use text, json or html")
        given = {k: _number(k, v, _NUMBERS[k]) for k, v in raw.items() if v is not None}
        ceiling = _number("budget", budget, float)
        defaults = {"dedup_horizon_s": settings.dedup_horizon_s, "speed_ttl_minute_s": settings.speed_ttl_minute_s,
                    "speed_ttl_hour_s": settings.speed_ttl_hour_s, "speed_ttl_day_s": settings.speed_ttl_day_s,
                    "speed_segment_history_s": settings.speed_segment_history_s, "architecture": architecture}
        if preset is not None:
            load = loads.preset(preset, **{**defaults, **given})
        elif "events_per_day" not in given:
            raise SettingError("--events-per-day", None, "is required without --preset",
                               f"give --events-per-day N, or --preset one of {', '.join(loads.PRESETS)}")
        else:
            load = loads.validate(loads.Load(**{**defaults, **given}))
        price_file = prices or (Path(settings.raw["TALLY_PLAN_PRICES"]) if settings.raw.get("TALLY_PLAN_PRICES") else None)
        price_table = load_prices(price_file)
        measured = load_figures(figures)
        result = plan(load, measured, price_table, budget=ceiling)
        if emit_params is not None:
            _emit(result, emit_params, params, console)
        if fmt == "text":
            print_text(result, console)
        elif fmt == "json":
            text = json.dumps(as_dict(result), indent=2, default=str)
            if out is None:
                click.echo(text)
            else:
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(text + "\n")
                console.print(f"wrote {out}")
        else:
            # Every preset side by side, in order; this plan in its preset's place, or after them if it is its own.
            shown = [result if name == load.name and not given else
                     plan(loads.preset(name, **defaults), measured, price_table, budget=ceiling) for name in loads.PRESETS]
            if result not in shown:
                shown.append(result)
            path = out or settings.home / "plans" / "plan.html"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(render_html(shown))
            console.print(f"wrote {path} ({', '.join(p.load.name for p in shown)}: "
                          + ", ".join(f"${p.total:,.0f}/month" for p in shown) + ")")


def _emit(result: Any, path: Path, params: tuple[str, ...], console: Any) -> None:
    from streaming.deploy.template import template_parameters
    from streaming.plan.params import parse_overrides, write_parameters

    todo = write_parameters(result, path, parse_overrides(params), set(template_parameters()))
    console.print(f"wrote {path} (parameters of deploy/tally.yaml for this plan)"
                  + (f"; still to set for Target=aws: {', '.join(todo)} (--param KEY=VALUE)" if todo else ""))
