"""The `spendstream` command. Every failure is one line on stderr and a non-zero exit."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import orjson
from pydantic import ValidationError

from streams.cli.options import add_data_dir, settings_from
from streams.errors import SpendstreamError

if TYPE_CHECKING:
    from streams.settings import Settings


def cmd_worker(args: argparse.Namespace) -> int:
    from streams.runtime.worker import run_worker

    return run_worker(settings_from(args), loglevel=args.loglevel)


def cmd_migrate(args: argparse.Namespace) -> int:
    from streams.ledger.migrations import apply_migrations
    from streams.ledger.peer import open_writer

    # Through the running worker when one owns the data dir (it migrated at start).
    with open_writer(settings_from(args), create=True) as client:
        applied = apply_migrations(client)
    print(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else ""))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from streams.cost.catalog import PriceCatalog
    from streams.embedded.processes import stop_within
    from streams.embedded.replay import run_replay

    settings = settings_from(args)
    PriceCatalog.load(settings.pricing_file)  # a bad pricing file fails here, in one line
    # The orderly stop takes a few seconds (15 s at most for a worker): 30 s bounds it.
    with stop_within(30.0):
        result = run_replay(
            settings, args.files, input_format=args.format, ownership=_ownership(args)
        )
    print(orjson.dumps(result).decode())
    return 0


def _ownership(args: argparse.Namespace) -> dict[str, str]:
    fields = ("tenant_id", "team_id", "workflow_id", "environment")
    return {f: getattr(args, f) for f in fields if getattr(args, f, None)}


def cmd_query(args: argparse.Namespace) -> int:
    from streams.cli.query import format_rows, run_query
    from streams.ledger.remote import open_reader

    settings = settings_from(args)
    with open_reader(settings) as client:
        try:
            columns, rows = run_query(client, args.sql)
        except SpendstreamError:  # already one line (the worker's answer)
            raise
        except Exception as exc:  # ClickHouse's own message is the useful line
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            raise SpendstreamError(f"query failed: {first_line}") from None
    print(format_rows(columns, rows, args.format))
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from streams.embedded.simulate import run_simulate

    settings = settings_from(args)
    return run_simulate(
        bootstrap=args.bootstrap or stack_bootstrap(settings),
        topic=settings.usage_topic,
        rate=args.rate,
        duration=args.duration,
        inject=args.inject,
        seed=args.seed,
    )


def stack_bootstrap(settings: Settings) -> str:
    """SPENDSTREAM_KAFKA_BOOTSTRAP when set, else the broker of the stack that runs on
    the data dir (`spendstream dev` announces it in worker.json), else the default."""
    from streams.ledger.remote import running_stack

    if "kafka_bootstrap" not in settings.model_fields_set:
        stack = running_stack(settings.data_dir)
        if stack is not None:
            return stack.broker
    return str(settings.kafka_bootstrap)


def cmd_dev(args: argparse.Namespace) -> int:
    from streams.embedded.dev import run_dev

    return run_dev(
        settings_from(args),
        simulate=args.simulate,
        rate=args.rate,
        workers=args.workers,
        backfill_span=args.backfill,
    )


# Started by `dev` (and `dev` itself), where their start time counts: their parser
# leaves out the sub-commands of the keys, alerts and analyst layers, whose modules load
# matplotlib and pyarrow (~0.8 s, twice on the way to `dev`'s first ledger row).
LEAN_COMMANDS = frozenset({"dev", "worker"})


def build_parser(layers: bool = True) -> argparse.ArgumentParser:
    """The `spendstream` parser; without `layers`, only the commands defined here."""
    parser = argparse.ArgumentParser(
        prog="spendstream", description="Real-time AI API spend attribution and alerting."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def command(
        name: str, handler: Callable[[argparse.Namespace], int], help_: str
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(func=handler)
        return p

    def data_options(p: argparse.ArgumentParser, pricing: bool = True) -> None:
        add_data_dir(p)
        if pricing:
            p.add_argument("--pricing", help="pricing file (YAML) with price overrides")

    p = command("dev", cmd_dev, "run the embedded stack: broker, worker, ClickHouse")
    data_options(p)
    p.add_argument("--config", help="alerting configuration (YAML)")
    p.add_argument("--simulate", action="store_true", help="publish synthetic traffic")
    p.add_argument("--rate", type=float, default=50.0, help="simulated events per second")
    p.add_argument("--workers", type=int, default=1, help="workers in the consumer group")
    p.add_argument(
        "--backfill",
        metavar="SPAN",
        help="first publish SPAN (14d, 36h) of simulated history at --rate through the "
        "pipeline: weekly rhythm and a few incidents, the last one under way",
    )
    p.add_argument(
        "--port",
        type=int,
        help="the worker's web port (default SPENDSTREAM_WEB_PORT, 6066; "
        "a free one if it is taken)",
    )

    p = command("worker", cmd_worker, "run a Faust worker configured by SPENDSTREAM_* env")
    data_options(p)
    p.add_argument("--loglevel", default="warning")

    p = command("replay", cmd_replay, "publish NDJSON files through the pipeline, report totals")
    p.add_argument("files", nargs="+", help="NDJSON or CSV (.csv) files; - for stdin")
    data_options(p)
    p.add_argument(
        "--format",
        default="canonical",
        help="line shape: canonical (default) or a provider format (openai, anthropic, "
        "gemini, bedrock, otel_genai, litellm)",
    )
    for field in ("tenant_id", "team_id", "workflow_id", "environment"):
        p.add_argument(
            f"--{field.replace('_id', '').replace('_', '-')}",
            dest=field,
            help=f"{field} stamped on provider-format lines",
        )

    p = command("query", cmd_query, "run read-only SQL against the ledger")
    p.add_argument("sql")
    data_options(p, pricing=False)
    p.add_argument("--format", choices=["table", "json", "csv"], default="table")

    p = command("simulate", cmd_simulate, "publish realistic synthetic usage events")
    p.add_argument("--rate", type=float, default=50.0, help="events per second")
    p.add_argument("--duration", type=float, default=None, help="seconds (default: forever)")
    p.add_argument(
        "--inject",
        choices=["runaway-loop", "model-swap", "prompt-bloat", "retry-storm"],
        help="inject an incident for the detectors",
    )
    p.add_argument(
        "--bootstrap",
        help="Kafka bootstrap (default: the broker of the stack running on --data-dir, "
        "else SPENDSTREAM_KAFKA_BOOTSTRAP)",
    )
    p.add_argument("--seed", type=int, default=None)
    add_data_dir(p)

    p = command("migrate", cmd_migrate, "apply pending sql/ migrations")
    data_options(p, pricing=False)

    if not layers:
        return parser
    from streams.cli.alerts import add_alerts_commands
    from streams.cli.keys import add_keys_commands

    add_keys_commands(sub)
    add_alerts_commands(sub)
    try:
        from streams.cli.analyst import add_analyst_commands
    except ImportError:  # the analyst layer is optional at import time of a partial checkout
        pass
    else:
        add_analyst_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("aiokafka", "kafka"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    given = sys.argv[1:] if argv is None else list(argv)
    lean = bool(given) and given[0] in LEAN_COMMANDS
    args = build_parser(layers=not lean).parse_args(argv)
    try:
        return int(args.func(args))
    except SpendstreamError as exc:
        print(f"spendstream: {exc}", file=sys.stderr)
        return exc.exit_code
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        print(f"spendstream: invalid setting {where}: {first['msg']}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        # ClickHouse and broker errors: one line, not a traceback (set
        # SPENDSTREAM_DEBUG=1 for the traceback).
        import os

        if os.environ.get("SPENDSTREAM_DEBUG"):
            raise
        text = str(exc).strip().splitlines()
        print(f"spendstream: {type(exc).__name__}: {text[0] if text else ''}", file=sys.stderr)
        return 1
