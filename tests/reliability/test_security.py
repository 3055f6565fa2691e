"""Case 9, security, on one real worker configured with secrets: the query endpoint needs
the analyst token as a Bearer token and runs one guarded SELECT under limits (every
probe of issue 22 is refused, with nothing written and no secret in the answer), spend
is not readable without a token, the data dir is private, parameters are bound, no
configured secret reaches a log, and prompt or completion text reaches no table. Ingest
keys (required, hashed, compared in constant time, scoped to a team) are covered in
tests/http_ingest/test_keys.py and tests/http_ingest/test_events_endpoint.py."""

from __future__ import annotations

import gzip
import socket
import stat
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest

from streams.http_ingest.keys import IngestKeyStore
from streams.ledger.remote import RemoteQueryClient
from tests.helpers.receivers import Receiver, ReceiverLoop, Reply
from tests.helpers.waiting import wait_for
from tests.reliability.conftest import FaultStack, make_events

pytestmark = pytest.mark.integration

ANALYST_TOKEN = "analyst-TOKEN-7f3a9c1e5b"
WEBHOOK_SECRET = "HOOKSECRET9b1d3f5e7a"
CANARY = "CANARY-7c1e-prompt-text"
EVIL_TENANT = "x' OR 1=1 --"
HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 3.0
# What a cut may take beyond its timeout: the timer's own rounding (aiohttp ceils
# timeouts over 5 s), a busy 2-core machine.
MARGIN = 3.0


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
        "SPENDSTREAM_QUERY_MAX_SECONDS": "2",
        # Short, so that the slow-client tests below wait seconds, not a minute.
        "SPENDSTREAM_HTTP_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
        "SPENDSTREAM_HTTP_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
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


OUTFILE = "/tmp/spendstream-security-outfile"

# Every probe of issue 22 (and the older ones): refused, with nothing written and no
# secret in the answer. The worker runs with a 2 s query limit (see `secured`).
PROBES = {
    "multi-statement": "SELECT 1; INSERT INTO usage_ledger (request_id, tenant_id) "
    "VALUES ('sec-evil', 'evil'); SELECT 1",
    "insert": "INSERT INTO usage_ledger (request_id, tenant_id) VALUES ('sec-evil', 'evil')",
    "create": "CREATE TABLE sneaky (a Int32) ENGINE = Memory",
    "drop": "DROP TABLE usage_ledger",
    "alter": "ALTER TABLE usage_ledger DELETE WHERE 1",
    "file-scalar": "SELECT file('/proc/self/environ')",
    "file-table": "SELECT * FROM file('/proc/self/environ', 'LineAsString')",
    "outfile": f"SELECT request_id FROM usage_ledger INTO OUTFILE '{OUTFILE}' TRUNCATE",
    "url": "SELECT * FROM url('http://127.0.0.1:1/x', 'LineAsString')",
    "remote": "SELECT * FROM remote('127.0.0.1', system.one)",
    "settings-escape": "SELECT 1 SETTINGS readonly = 0",
    "settings-limits": "SELECT count() FROM usage_ledger SETTINGS max_execution_time = 0",
    "format": "SELECT 1 FORMAT TabSeparated",
    "system-table": "SELECT name FROM system.users",
    "numbers": "SELECT count() FROM numbers(1e12)",
    "sleep": "SELECT sleep(3)",
    # Allowed tables only, and still bounded: four copies of the ledger joined.
    "long-query": "SELECT sum(cityHash64(a.request_id, b.request_id, c.request_id, "
    "d.request_id)) FROM usage_ledger a, usage_ledger b, usage_ledger c, usage_ledger d",
}


@pytest.mark.parametrize("sql", PROBES.values(), ids=PROBES.keys())
def test_the_query_endpoint_refuses_every_probe(secured: dict[str, Any], sql: str) -> None:
    stack = secured["stack"]
    before = stack.query("SELECT count() FROM usage_ledger")
    started = time.monotonic()
    answer = post_query(stack, {"sql": sql}, ANALYST_TOKEN)
    assert answer.status_code == 400, answer.text
    assert "refused" in answer.text or "TIMEOUT_EXCEEDED" in answer.text, answer.text
    assert time.monotonic() - started < 15  # the 2 s limit, not minutes
    for secret in (ANALYST_TOKEN, stack.stack.peer_token, WEBHOOK_SECRET, "SPENDSTREAM_"):
        assert secret not in answer.text
    assert stack.query("SELECT count() FROM usage_ledger") == before
    assert stack.query(
        "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = 'sneaky'"
    ) == [(0,)]
    assert not Path(OUTFILE).exists()


def test_the_query_endpoint_takes_a_bearer_token_and_a_json_body(
    secured: dict[str, Any],
) -> None:
    stack = secured["stack"]
    url = f"{stack.url}/v1/query"
    body = orjson.dumps({"sql": "SELECT 1"})
    bare = httpx.post(url, content=body, headers={"Authorization": ANALYST_TOKEN})
    assert bare.status_code == 401
    peer = httpx.post(
        url, content=body, headers={"Authorization": f"Bearer {stack.stack.peer_token}"}
    )
    assert peer.status_code == 401  # the peer token is for the peer paths only
    auth = {"Authorization": f"Bearer {ANALYST_TOKEN}"}
    for not_json in (b"SELECT 1", b"", b"[1]", b'{"sql": 1}', b'{"parameters": {}}'):
        answer = httpx.post(url, content=not_json, headers=auth)
        assert answer.status_code == 400, (not_json, answer.text)
    # The analyst token does not write through the peers' path.
    insert = httpx.post(f"{stack.url}/v1/ledger/insert", content=b"{}", headers=auth)
    assert insert.status_code == 401


def test_spend_is_not_readable_without_a_token(secured: dict[str, Any]) -> None:
    stack = secured["stack"]
    tenant = quote(EVIL_TENANT, safe="")
    for path in ("/table", "/table/spend_totals", "/router", "/router/spend_totals/x"):
        assert httpx.get(f"{stack.url}{path}", headers={}).status_code == 404, path
    limits = f"{stack.url}/v1/limits/{tenant}"
    assert httpx.get(limits).status_code == 401
    assert httpx.get(limits, headers={"Authorization": "Bearer wrong"}).status_code == 401
    # An ingest key reads its own tenant's limits, not another's.
    store = IngestKeyStore(stack.settings.data_dir / "ingest_keys.json")
    _, key = store.create(EVIL_TENANT)
    _, other = store.create("someone-else")
    own = httpx.get(limits, headers={"Authorization": f"Bearer {key.get_secret_value()}"})
    assert own.status_code in (200, 503), own.text  # 503 while tables recover
    foreign = httpx.get(limits, headers={"Authorization": f"Bearer {other.get_secret_value()}"})
    assert foreign.status_code == 401


def test_secrets_and_the_ledger_are_private_to_their_owner(secured: dict[str, Any]) -> None:
    data_dir: Path = secured["stack"].settings.data_dir
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    tokens = data_dir / "tokens.json"
    assert stat.S_IMODE(tokens.stat().st_mode) == 0o600
    checked = 0
    for path in data_dir.rglob("*"):
        mode = stat.S_IMODE(path.lstat().st_mode)
        if path.is_symlink():
            continue
        assert mode & 0o077 == 0, f"{path} is {oct(mode)}"
        checked += 1
    assert checked > 10  # the ledger's parts, logs, tokens


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

    auth = {"Authorization": f"Bearer {ANALYST_TOKEN}"}

    def in_stream() -> Decimal | None:
        body = httpx.get(url, headers=auth, timeout=10).json()
        return Decimal(body["month_to_date_usd"]) if "month_to_date_usd" in body else None

    assert wait_for(lambda: in_stream() == Decimal(month[0]), timeout=60)
    assert httpx.get(url, headers=auth, timeout=10).json()["tenant_id"] == EVIL_TENANT


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


def test_http_ingest_answers_bad_bodies_in_http(secured: dict[str, Any]) -> None:
    stack: FaultStack = secured["stack"]
    url = f"{stack.url}/v1/events"
    event = orjson.dumps(make_events(1, seed=2202, prefix="sec-body-")[0])
    truncated = gzip.compress(event)[:-12]
    answer = httpx.post(
        url,
        content=truncated,
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert answer.status_code == 400, answer.text  # an answer, not a reset connection
    repeated = httpx.post(
        url,
        content=b'{"request_id": "sec-dup", "request_id": "sec-dup-2"}',
        headers={"Content-Type": "application/json"},
    )
    assert [e["reason"] for e in repeated.json()["errors"]] == ["duplicate_key"]


def connect(stack: FaultStack) -> socket.socket:
    port = int(stack.url.rsplit(":", 1)[1])
    return socket.create_connection(("127.0.0.1", port), timeout=30)


def until_closed(sock: socket.socket, started: float, limit: float) -> tuple[float, bytes]:
    """Seconds from `started` until the server closed the connection (an error if it is
    still open after `limit`), and what it answered before closing."""
    answer = b""
    sock.settimeout(0.2)
    while time.monotonic() - started < limit:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            break
        if not chunk:
            break
        answer += chunk
    else:
        raise AssertionError(f"still open {limit:.0f}s later; answered {answer[:200]!r}")
    return time.monotonic() - started, answer


@pytest.mark.parametrize(
    "partial",
    [
        pytest.param(b"", id="nothing"),
        pytest.param(b"POST /v1/eve", id="half-a-request-line"),
        pytest.param(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Le", id="half-the-headers"),
    ],
)
def test_a_client_that_stalls_in_its_request_head_is_cut_off(
    secured: dict[str, Any], partial: bytes
) -> None:
    with connect(secured["stack"]) as sock:
        started = time.monotonic()
        sock.sendall(partial)
        elapsed, answer = until_closed(sock, started, HEADER_TIMEOUT + MARGIN)
    assert elapsed >= HEADER_TIMEOUT * 0.9, (elapsed, answer)
    assert answer == b""


def test_a_request_head_that_trickles_in_is_cut_off(secured: dict[str, Any]) -> None:
    # The slowloris client: a header byte now and then, never the blank line.
    head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000
    with connect(secured["stack"]) as sock:
        started = time.monotonic()
        sent = 0
        try:
            while time.monotonic() - started < HEADER_TIMEOUT + MARGIN and sent < len(head):
                sock.sendall(head[sent : sent + 1])
                sent += 1
                time.sleep(0.25)
        except (BrokenPipeError, ConnectionResetError):
            pass
        elapsed, answer = until_closed(sock, started, HEADER_TIMEOUT + MARGIN)
    assert elapsed <= HEADER_TIMEOUT + MARGIN
    assert answer == b""


@pytest.mark.parametrize(
    ("path", "authorization"),
    [
        pytest.param("/v1/query", f"Bearer {ANALYST_TOKEN}", id="query"),
        pytest.param("/v1/events", "", id="ingest"),
    ],
)
def test_a_body_slower_than_allowed_is_answered_408_and_closed(
    secured: dict[str, Any], path: str, authorization: str
) -> None:
    body = orjson.dumps({"sql": "SELECT 1", "pad": "x" * 200})
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        + (f"Authorization: {authorization}\r\n" if authorization else "")
        + "\r\n"
    ).encode()
    with connect(secured["stack"]) as sock:
        sock.sendall(head)
        started = time.monotonic()
        sent = 0
        sock.settimeout(0.25)
        answer = b""
        # A byte every quarter second: the body would take a minute.
        while sent < len(body) and time.monotonic() - started < BODY_TIMEOUT + MARGIN:
            try:
                sock.sendall(body[sent : sent + 1])
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += 1
            try:
                answer += sock.recv(65536)
            except TimeoutError:
                continue
            if answer:
                break
        elapsed, rest = until_closed(sock, started, BODY_TIMEOUT + MARGIN)
    answer += rest
    assert sent < len(body)
    assert BODY_TIMEOUT * 0.9 <= elapsed <= BODY_TIMEOUT + MARGIN, (elapsed, answer)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:300]


def test_requests_within_the_timeouts_are_served_on_one_connection(
    secured: dict[str, Any],
) -> None:
    request = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    with connect(secured["stack"]) as sock:
        for _ in range(2):
            sock.sendall(request)
            answer = b""
            while b"\r\n\r\n" not in answer:
                answer += sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
            # Read the rest of the body so the next answer starts clean.
            head, _, rest = answer.partition(b"\r\n\r\n")
            length = int(
                next(
                    line.split(b":", 1)[1]
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
            )
            while len(rest) < length:
                rest += sock.recv(65536)
            time.sleep(HEADER_TIMEOUT / 2)  # idle, but less than the timeout
    # A body that arrives in time is read whole: the ordinary query answers.
    response = post_query(secured["stack"], {"sql": "SELECT 1"}, ANALYST_TOKEN)
    assert response.status_code == 200, response.text
