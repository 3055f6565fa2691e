"""The analyst CLI: `report weekly|chargeback`, `export focus`, `reprice`, `whatif`,
`reconcile`, `retention`. Each handler takes the parsed arguments and returns the exit code;
problems the user can fix are raised as SpendstreamError (one line)."""

from __future__ import annotations

import argparse
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

from schemas.scenario import Scenario, Substitution
from streams.analyst import chargeback, focus_export, reconcile, retention, weekly_render, whatif
from streams.analyst.access import require_objects
from streams.analyst.money import usd
from streams.analyst.periods import date_range, iso_week, month, week_to_date
from streams.analyst.reprice import reprice
from streams.analyst.weekly_review import start_weekly_review
from streams.cli.options import add_data_dir, settings_from
from streams.cost.catalog import PriceCatalog
from streams.errors import ConfigError
from streams.ledger.peer import open_writer
from streams.ledger.remote import open_reader


def add_analyst_commands(subparsers: Any) -> None:
    """Add the analyst commands to the main CLI's `add_subparsers()` object."""
    report = subparsers.add_parser("report", help="weekly review and chargeback reports")
    reports = report.add_subparsers(dest="report", required=True)

    weekly = reports.add_parser("weekly", help="the weekly spend review")
    weekly.add_argument("--week", help="ISO week like 2026-W47 (default: this week to date)")
    weekly.add_argument("--format", choices=weekly_render.FORMATS, default="table")
    weekly.add_argument("--out", type=Path, help="write the report (and charts) into DIR")
    add_data_dir(weekly)
    weekly.set_defaults(func=cmd_report_weekly)

    charge = reports.add_parser("chargeback", help="a month's spend split for chargeback")
    charge.add_argument("--month", required=True, help="month like 2026-11")
    charge.add_argument("--by", choices=sorted(chargeback.DIMENSIONS), required=True)
    charge.add_argument("--format", choices=chargeback.FORMATS, default="csv")
    add_data_dir(charge)
    charge.set_defaults(func=cmd_report_chargeback)

    export = subparsers.add_parser("export", help="exports in standard formats")
    exports = export.add_subparsers(dest="export", required=True)
    focus = exports.add_parser("focus", help="a month of charges as FinOps FOCUS 1.2")
    focus.add_argument("--month", required=True, help="month like 2026-11")
    focus.add_argument("--out", type=Path, required=True, help="FILE.csv or FILE.parquet")
    add_data_dir(focus)
    focus.set_defaults(func=cmd_export_focus)

    reprice = subparsers.add_parser(
        "reprice", help="recompute costs under the current prices and write corrections"
    )
    reprice.add_argument("--from", dest="start", required=True, help="first day, 2026-11-01")
    reprice.add_argument("--to", dest="end", required=True, help="last day (inclusive)")
    reprice.add_argument("--pricing", type=Path, help="pricing file (YAML) with overrides")
    reprice.add_argument("--reason", default="reprice", help="recorded on each correction")
    add_data_dir(reprice)
    reprice.set_defaults(func=cmd_reprice)

    what = subparsers.add_parser(
        "whatif", help="re-price a period under a scenario (read-only): actual vs scenario"
    )
    what.add_argument("--from", dest="start", required=True, help="first day, 2026-11-01")
    what.add_argument("--to", dest="end", required=True, help="last day (inclusive)")
    what.add_argument("--scenario", type=Path, help="scenario file (YAML, see docs/analyst.md)")
    what.add_argument(
        "--swap",
        action="append",
        default=[],
        metavar="FROM=TO",
        help="price FROM's calls as TO (provider/model or model); repeatable",
    )
    what.add_argument("--workflow", help="apply --swap only to this workflow_id")
    what.add_argument("--tenant", help="apply --swap only to this tenant_id")
    what.add_argument("--pricing", type=Path, help="a price card (pricing-file YAML)")
    what.add_argument("--cache-hit-rate", type=Decimal, help="share 0..1 of input read from cache")
    what.add_argument("--service-tier", help="serve every call at this tier (flex, priority…)")
    what.add_argument(
        "--batch", action=argparse.BooleanOptionalAction, default=None, help="batch API"
    )
    what.add_argument("--format", choices=whatif.FORMATS, default="table")
    add_data_dir(what)
    what.set_defaults(func=cmd_whatif)

    recon = subparsers.add_parser(
        "reconcile", help="compare the ledger with a provider's cost export"
    )
    recon.add_argument("file", type=Path, help="the provider's cost export (JSON or CSV)")
    recon.add_argument("--provider", choices=reconcile.PROVIDERS, required=True)
    add_data_dir(recon)
    recon.set_defaults(func=cmd_reconcile)

    keep = subparsers.add_parser("retention", help="show or change how long raw rows are kept")
    keep.add_argument("--raw-days", type=int, help="days of raw ledger rows (default 90)")
    keep.add_argument(
        "--hourly-days", type=int, help="days of tenant_hourly and attribution_hourly (default 400)"
    )
    add_data_dir(keep)
    keep.set_defaults(func=cmd_retention)


def cmd_report_weekly(args: argparse.Namespace) -> int:
    week = iso_week(args.week) if args.week else week_to_date()
    with open_reader(settings_from(args)) as client:
        require_objects(client, "spend_daily", "workflow_run_daily", "cost_corrections")
        # Rendered while the client is open: the charts are drawn as the last queries run.
        review = start_weekly_review(client, week)
        if args.out:
            for path in weekly_render.write_report(review, args.format, args.out):
                print(path)
        else:
            text, _ = weekly_render.render(review, args.format)
            sys.stdout.write(text)
    return 0


def cmd_report_chargeback(args: argparse.Namespace) -> int:
    with open_reader(settings_from(args)) as client:
        require_objects(client, "spend_daily")
        report = chargeback.build_chargeback(client, month(args.month), args.by)
    sys.stdout.write(chargeback.render(report, args.format))
    return 0


def cmd_export_focus(args: argparse.Namespace) -> int:
    period = month(args.month)
    with open_reader(settings_from(args)) as client:
        require_objects(client, "focus_charges")
        rows = focus_export.export_focus(client, period, args.out)
    print(f"{rows} FOCUS rows for {period.label} written to {args.out}")
    return 0


def cmd_reprice(args: argparse.Namespace) -> int:
    period = date_range(args.start, args.end)
    catalog = PriceCatalog.load(args.pricing)
    with open_writer(settings_from(args)) as client:
        require_objects(client, "cost_corrections")
        result = reprice(client, catalog, period, reason=args.reason)
    print(
        f"re-priced {result.rows_checked} requests {period.start} … {period.end}: "
        f"{result.corrections} corrections ({result.newly_priced} newly priced), "
        f"net {usd(result.delta_usd)}; {result.still_unpriced} still without a price"
    )
    for (provider, model), delta in sorted(result.by_model.items()):
        print(f"  {provider}/{model}: {usd(delta)}")
    return 0


def scenario_from_args(args: argparse.Namespace) -> Scenario:
    """The scenario file, if any, with the command line's levers on top."""
    base = whatif.load_scenario(args.scenario) if args.scenario else Scenario()
    swaps = []
    for text in args.swap:
        source, sep, target = text.partition("=")
        if not sep or not source or not target:
            raise ConfigError(f"--swap {text!r}: expected FROM=TO, e.g. gpt-4o=gpt-4o-mini")
        swaps.append(
            Substitution.model_validate(
                {
                    "from": source,
                    "to": target,
                    "workflow_id": args.workflow,
                    "tenant_id": args.tenant,
                }
            )
        )
    if (args.workflow or args.tenant) and not swaps:
        raise ConfigError("--workflow and --tenant scope --swap: give at least one --swap")
    levers = {
        "pricing": args.pricing,
        "cache_hit_rate": args.cache_hit_rate,
        "service_tier": args.service_tier,
        "batch": args.batch,
    }
    try:
        return Scenario.model_validate(
            {
                **base.model_dump(exclude_none=True),
                "substitutions": [*base.substitutions, *swaps],
                **{name: value for name, value in levers.items() if value is not None},
            }
        )
    except ValueError as exc:
        raise ConfigError(f"whatif: {str(exc).splitlines()[-1].strip()}") from None


def cmd_whatif(args: argparse.Namespace) -> int:
    period = date_range(args.start, args.end)
    scenario = scenario_from_args(args)
    catalog = PriceCatalog.load(scenario.pricing)
    with open_reader(settings_from(args)) as reader:
        require_objects(reader, "usage_ledger", "cost_corrections")
        report = whatif.what_if(reader, catalog, scenario, period)
    sys.stdout.write(whatif.render(report, args.format))
    return 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    costs = reconcile.read_provider_costs(args.file, args.provider)
    with open_reader(settings_from(args)) as client:
        require_objects(client, "model_daily")
        lines = reconcile.reconcile(client, args.provider, costs)
    sys.stdout.write(reconcile.render(lines, args.provider))
    # Non-zero when a difference needs checking, so schedulers can alert on it.
    return 1 if any(line.flagged for line in lines) else 0


def cmd_retention(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if args.raw_days is not None or args.hourly_days is not None:
        with open_writer(settings) as client:
            require_objects(client, *retention.TTL_TABLES)
            if args.raw_days is not None:
                retention.set_raw_retention(client, args.raw_days)
            if args.hourly_days is not None:
                retention.set_hourly_retention(client, args.hourly_days)
    with open_reader(settings) as reader:
        require_objects(reader, *retention.TTL_TABLES)
        for table, ttl in sorted(retention.current_ttls(reader).items()):
            print(f"{table}: {ttl}")
    return 0
