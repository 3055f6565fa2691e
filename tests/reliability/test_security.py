"""Case 9, security, on one real worker configured with secrets: the query endpoint needs
the analyst token and is read-only, parameters are bound, no configured secret reaches
a log, and prompt or completion text reaches no table. Ingest keys (required, hashed,
compared in constant time, scoped to a team) are covered in tests/test_ingest_keys.py
and tests/http_ingest/test_events_endpoint.py."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest

from streams.ledger.remote import RemoteQueryClient
from tests.helpers.receivers import Receiver, ReceiverLoop, Reply
from tests.helpers.waiting import wait_for
from tests.reliability.conftest import FaultStack, make_events

pytestmark = pytest.mark.integration

ANALYST_TOKEN = "analyst-TOKEN-7f3a9c1e5b"
WEBHOOK_SECRET = "HOOKSECRET9b1d3f5e7a"
CANARY = "CANARY-7c1e-prompt-text"
EVIL_TENANT = "x' OR 1=1 --"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("security")
    data_dir = root / "data"
    data_dir.mkdir()
    # A Slack receiver that answers 500: deliveries fail and are logged, with the
    # webhook URL (a secret) in the client's hands.
    loop = ReceiverLoop()
    slack = loop.start(Receiver(lambda _: Reply(500, {"Content-Type": "text/plain"}, "boom")))
    config = root / "spend.yaml"
    config.write_text(
        f"""
alerting:
  backoff_initial_seconds: 0.2
  backoff_max_seconds: 0.5
workflows:
  run_threshold_usd:
    export: "1.00"
routing:
  console: false
  warning:
    slack:
      webhook_url: {slack.base_url}/services/T0/B0/{WEBHOOK_SECRET}
  critical:
    slack:
      webhook_url: {slack.base_url}/services/T0/B0/{WEBHOOK_SECRET}
"""
    )
    env = {
        "SPENDSTREAM_ANALYST_TOKEN": ANALYST_TOKEN,
        "SPENDSTREAM_CONFIG_FILE": str(config),
    }
    stack = SecuredStack(data_dir, env)
    try:
        events = make_events(200, seed=909, prefix="sec-")
        evil = [
            dict(e, tenant_id=EVIL_TENANT, request_id=f"sec-evil-{i}")
            for i, e in enumerate(events[:3])
        ]
        with_text = [
            dict(e, request_id=f"sec-text-{i}", prompt=CANARY, completion=CANARY, input=CANARY)
            for i, e in enumerate(events[3:6])
        ]
        with_text[0]["messages"] = [{"role": "user", "content": CANARY}]
        rejected = dict(events[6], request_id="sec-text-rejected", input_tokens=-1, prompt=CANARY)
        expensive = dict(
            events[7],
            request_id="sec-expensive",
            workflow_id="export",
            workflow_run_id="sec-run-1",
            provider="openai",
            model="gpt-4o",
            input_tokens=1_000_000,
            output_tokens=10,
            timestamp=datetime.now(UTC).isoformat(),
        )
        lines = [orjson.dumps(e) for e in [*events[8:], *evil, *with_text, rejected, expensive]]
        lines.append(b'{"request_id": "sec-malformed", "prompt": "' + CANARY.encode())
        stack.publish(lines)
        stack.wait_consumed(timeout=300)
        wait_for(lambda: slack.requests, timeout=60)  # the alert was attempted
        yield {"stack": stack, "slack": slack, "evil": evil, "root": root}
    finally:
        stack.stop()
        loop.stop(slack)
        loop.close()


class SecuredStack(FaultStack):
    def query(self, sql: str) -> list[tuple[Any, ...]]:
        client = RemoteQueryClient(self.url, token=ANALYST_TOKEN)
        try:
            return list(client.query(sql).result_rows)
        finally:
            client.close()


def post_query(stack: FaultStack, body: dict[str, Any], token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.post(
        f"{stack.url}/v1/query", content=orjson.dumps(body), headers=headers, timeout=30
    )


def test_the_query_endpoint_needs_the_analyst_token(secured: dict[str, Any]) -> None:
    stack = secured["stack"]
    body = {"sql": "SELECT count() FROM usage_ledger"}
    assert post_query(stack, body, None).status_code == 401
    assert post_query(stack, body, "wrong").status_code == 401
    assert post_query(stack, body, ANALYST_TOKEN[:-1]).status_code == 401
    assert post_query(stack, body, ANALYST_TOKEN).status_code == 200


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO usage_ledger (request_id, tenant_id) VALUES ('sec-evil', 'evil')",
        "CREATE TABLE sneaky (a Int32) ENGINE = Memory",
        "DROP TABLE usage_ledger",
        "ALTER TABLE usage_ledger DELETE WHERE 1",
        "SELECT * FROM file('/etc/passwd', 'LineAsString')",
        "SELECT * FROM url('http://127.0.0.1:1/x', 'LineAsString')",
        "SELECT * FROM remote('127.0.0.1', system.one)",
        "SELECT 1 SETTINGS readonly = 0",
    ],
    ids=["insert", "create", "drop", "alter", "file", "url", "remote", "settings-escape"],
)
def test_the_query_endpoint_refuses_writes_and_table_functions(
    secured: dict[str, Any], sql: str
) -> None:
    stack = secured["stack"]
    before = stack.query("SELECT count() FROM usage_ledger")
    answer = post_query(stack, {"sql": sql}, ANALYST_TOKEN)
    assert answer.status_code == 400, answer.text
    assert "readonly" in answer.text.lower()
    assert stack.query("SELECT count() FROM usage_ledger") == before
    assert stack.query("EXISTS TABLE sneaky") == [(0,)]


def test_a_tenant_named_like_an_injection_is_just_a_name(secured: dict[str, Any]) -> None:
    stack: FaultStack = secured["stack"]
    sql = "SELECT count(), sum(cost_usd) FROM usage_ledger FINAL WHERE tenant_id = {t:String}"
    answer = post_query(stack, {"sql": sql, "parameters": {"t": EVIL_TENANT}}, ANALYST_TOKEN)
    assert answer.status_code == 200
    count, _ = answer.json()["rows"][0]
    assert int(count) == len(secured["evil"])
    (everything,) = stack.query("SELECT count() FROM usage_ledger FINAL")
    assert int(everything[0]) > int(count)
    # The spend limits page takes the tenant from the path: its month total is that
    # tenant's alone.
    url = f"{stack.url}/v1/limits/{quote(EVIL_TENANT, safe='')}"
    (month,) = stack.query(
        "SELECT sum(cost_usd) FROM usage_ledger FINAL WHERE tenant_id = 'x'' OR 1=1 --' "
        "AND toStartOfMonth(timestamp) = toStartOfMonth(now64(3, 'UTC'))"
    )

    def in_stream() -> Decimal | None:
        body = httpx.get(url, timeout=10).json()
        return Decimal(body["month_to_date_usd"]) if "month_to_date_usd" in body else None

    assert wait_for(lambda: in_stream() == Decimal(month[0]), timeout=60)
    assert httpx.get(url, timeout=10).json()["tenant_id"] == EVIL_TENANT


def test_no_configured_secret_reaches_a_log(secured: dict[str, Any]) -> None:
    stack: FaultStack = secured["stack"]
    # Failed attempts with the wrong secrets, and requests that carry the right ones.
    post_query(stack, {"sql": "SELECT 1"}, ANALYST_TOKEN)
    post_query(stack, {"sql": "SELECT broken syntax"}, ANALYST_TOKEN)
    httpx.post(f"{stack.url}/v1/ledger/insert", content=b"{}", timeout=10)
    peer_token = stack.stack.peer_token  # generated by the stack for its workers
    httpx.post(
        f"{stack.url}/v1/ledger/insert",
        content=b"{}",
        headers={"Authorization": f"Bearer {peer_token}"},
        timeout=10,
    )
    time.sleep(2)  # the failing Slack deliveries have been retried and logged
    logs = list(stack.settings.data_dir.glob("*.log"))
    assert logs
    text = "\n".join(p.read_text(errors="replace") for p in logs)
    assert secured["slack"].requests  # deliveries failed, with the webhook in hand
    # The failures were logged (the lines that could have carried the webhook URL) ...
    failures = [line for line in text.splitlines() if "slack delivery of" in line]
    assert failures and all("failed: 500" in line for line in failures), failures[:3]
    # ... and no secret is in them, nor anywhere else in the logs.
    for secret in (ANALYST_TOKEN, peer_token, WEBHOOK_SECRET):
        assert not [line for line in failures if secret in line]
        assert secret not in text, f"a secret is in {[p.name for p in logs]}"


def test_prompt_and_completion_text_reach_no_table(secured: dict[str, Any]) -> None:
    stack: FaultStack = secured["stack"]
    # The rejected event and the malformed line are dead letters: they were stored,
    # without their text.
    reasons = {
        str(r[0]): str(r[1])
        for r in stack.query(
            "SELECT request_id, reason FROM dead_letters FINAL "
            "WHERE request_id LIKE 'sec-%' OR raw_payload LIKE '%sec-malformed%'"
        )
    }
    assert "token_count_out_of_range" in reasons.values()
    assert "malformed_json" in reasons.values()
    ledgered = stack.query(
        "SELECT count() FROM usage_ledger FINAL WHERE request_id LIKE 'sec-text-%'"
    )
    assert ledgered == [(3,)]
    tables = [
        str(r[0])
        for r in stack.query(
            "SELECT name FROM system.tables WHERE database = currentDatabase() "
            "AND engine NOT LIKE '%View%'"
        )
    ]
    assert "usage_ledger" in tables and "dead_letters" in tables
    for table in tables:
        columns = [
            str(r[0])
            for r in stack.query(
                f"SELECT name FROM system.columns WHERE database = currentDatabase() "
                f"AND table = '{table}'"
            )
        ]
        if not columns:
            continue
        row_text = "concat(" + ", ".join(f"toString(`{c}`)" for c in columns) + ", '')"
        hits = stack.query(
            f"SELECT count() FROM `{table}` WHERE position({row_text}, '{CANARY}') > 0"
        )
        assert hits == [(0,)], table
