"""`spendstream alerts ack|snooze|acks`: the operator's word, through the running worker.

The worker that owns the data dir (`<data dir>/worker.json`) applies it and records it
in `alert_acknowledgements`; these commands send the analyst token (tokens.json, or
SPENDSTREAM_ANALYST_TOKEN) as every command that reads through the worker does.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import httpx
import orjson

from streams.auth import analyst_token_for
from streams.cli.options import add_data_dir, settings_from
from streams.errors import SpendstreamError
from streams.ledger.remote import refusal, running_worker_url


def add_alerts_commands(subparsers: Any) -> None:
    help_ = "acknowledge or snooze alerts (through the running worker)"
    alerts = subparsers.add_parser("alerts", help=help_, description=help_)
    sub = alerts.add_subparsers(dest="alerts_command", required=True)

    help_ = "acknowledge a paged alert as the new normal: its tenant's baseline rebases"
    ack = sub.add_parser("ack", help=help_, description=help_)
    ack.add_argument("alert_id", help="the alert id of the page (or its fingerprint)")
    ack.add_argument("--note", default="", help="why this is expected")
    add_data_dir(ack)
    ack.set_defaults(func=cmd_alerts_ack)

    help_ = "hold back the pages of a key (or of an alert's key) for a period"
    snooze = sub.add_parser("snooze", help=help_, description=help_)
    snooze.add_argument("target", help="a key (tenant:acme, tenant:acme/workflow:x) or alert id")
    snooze.add_argument("--for", dest="period", required=True, help="30m, 4h, 2d")
    snooze.add_argument("--note", default="")
    add_data_dir(snooze)
    snooze.set_defaults(func=cmd_alerts_snooze)

    help_ = "list the acknowledgements and snoozes in force"
    listing = sub.add_parser("acks", help=help_, description=help_)
    add_data_dir(listing)
    listing.set_defaults(func=cmd_alerts_acks)


def call_worker(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    settings = settings_from(args)
    url = running_worker_url(settings.data_dir)
    if url is None:
        raise SpendstreamError(
            f"no running worker owns {settings.data_dir}: start `spendstream dev` "
            "(acknowledgements are applied by the worker)"
        )
    token = analyst_token_for(settings.data_dir, settings.analyst_token)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.request(
        method, url + path, headers=headers, content=orjson.dumps(body), timeout=30
    )
    if response.status_code != 200:
        raise SpendstreamError(f"{path}: {refusal(response)}")
    return response.json()


def cmd_alerts_ack(args: argparse.Namespace) -> int:
    answer = call_worker(args, "POST", f"/v1/alerts/{args.alert_id}/ack", {"note": args.note})
    for ack in answer["acknowledged"]:
        print(f"acknowledged {ack['key']}: new normal ${ack['level']}/h until {ack['until']}")
    return 0


def cmd_alerts_snooze(args: argparse.Namespace) -> int:
    body = {"key": args.target, "for": args.period, "note": args.note}
    snooze = call_worker(args, "POST", "/v1/alerts/snooze", body)["snoozed"]
    print(f"snoozed {snooze['key']} until {snooze['until']}")
    return 0


def cmd_alerts_acks(args: argparse.Namespace) -> int:
    answer = call_worker(args, "GET", "/v1/alerts/acks")
    sys.stdout.write(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0
