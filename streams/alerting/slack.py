"""Slack: a Block Kit message through slack-sdk (incoming webhook, or chat.postMessage).

slack-sdk's `WebhookClient` returns a 400/404/5xx as a response without
raising, and its default retry handlers cover only connection errors. We add
`RateLimitErrorRetryHandler` (sleeps for Retry-After) and a server-error
handler, wrap every handler so each retry it performs is reported as an
attempt, and read the final status ourselves.

A receiver whose certificate fails verification is a permanent failure (after
slack-sdk's one connection-error retry): retrying cannot help until someone
fixes it, and retrying for ever would hold back every later alert on the channel.

The webhook URL is the credential, and slack-sdk logs request URLs at DEBUG on
its logger; we give the client a logger that never emits DEBUG, and redact the
URL and token from every reason we return.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from ssl import SSLContext
from typing import Any

from pydantic import SecretStr
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry import (
    ConnectionErrorRetryHandler,
    FixedValueRetryIntervalCalculator,
    RateLimitErrorRetryHandler,
    RetryHandler,
    RetryIntervalCalculator,
)
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.models.blocks import (
    Block,
    ContextBlock,
    DividerBlock,
    HeaderBlock,
    MarkdownTextObject,
    SectionBlock,
)
from slack_sdk.webhook import WebhookClient

from schemas.alert import Alert
from schemas.spend_config import SLACK_API_URL, SlackTarget
from streams.alerting.acknowledgements import AckLinks, alert_id
from streams.alerting.notifier import (
    Clock,
    SendAttempt,
    http_attempt,
    redact,
    short,
    tls_verification_failed,
    utc_now,
)
from streams.alerting.render import (
    cause_label,
    cause_ratios,
    format_amount,
    format_time,
    format_window,
    ratio,
    supporting_evidence,
    who,
)
from streams.retrying import parse_retry_after

log = logging.getLogger(__name__)

# slack-sdk's built-in ServerErrorRetryHandler retries only 500 and 503; a 502 or 504
# from a gateway in front of Slack is just as transient.
SERVER_ERROR_STATUSES = frozenset({500, 502, 503, 504})
# chat.postMessage answers 200 with ok=false; these errors are worth retrying.
TRANSIENT_API_ERRORS = frozenset(
    {"internal_error", "fatal_error", "service_unavailable", "request_timeout", "ratelimited"}
)

SEVERITY_EMOJI = {
    "critical": ":red_circle:",
    "warning": ":large_orange_circle:",
    "info": ":information_source:",
}


def _quiet_logger() -> logging.Logger:
    # slack-sdk checks `logger.level <= DEBUG` before formatting a message that
    # contains the request URL (the webhook secret); a level above DEBUG skips it.
    quiet = logging.getLogger("spendstream.alerting.slack_sdk")
    quiet.setLevel(logging.INFO)
    return quiet


class ServerErrorRetryHandler(RetryHandler):
    """Retries 500, 502, 503 and 504 (slack-sdk's built-in one covers only 500 and 503)."""

    def _can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        return response is not None and response.status_code in SERVER_ERROR_STATUSES


def _header(headers: Mapping[str, Any] | None, name: str) -> str | None:
    if not headers:
        return None
    for key, value in headers.items():
        if key.lower() == name.lower():
            return str(value[0] if isinstance(value, list) and value else value)
    return None


class _ObservedRetries(RetryHandler):
    """Delegates to a slack-sdk handler and reports each retry it performs as an attempt."""

    def __init__(self, inner: RetryHandler, notifier: SlackNotifier) -> None:
        super().__init__(inner.max_retry_count, inner.interval_calculator)
        self.inner = inner
        self.notifier = notifier

    def can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        return self.inner.can_retry(state=state, request=request, response=response, error=error)

    def prepare_for_next_attempt(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> None:
        self.notifier._record_retry(response, error)
        self.inner.prepare_for_next_attempt(
            state=state, request=request, response=response, error=error
        )


def default_retry_handlers(
    *,
    rate_limit_retries: int = 1,
    server_error_retries: int = 1,
    connection_retries: int = 1,
    interval: RetryIntervalCalculator | None = None,
) -> list[RetryHandler]:
    """Connection errors, 429 (sleeping for Retry-After) and 5xx, each retried in-library."""
    interval = interval or FixedValueRetryIntervalCalculator(0.5)
    return [
        ConnectionErrorRetryHandler(
            max_retry_count=connection_retries, interval_calculator=interval
        ),
        RateLimitErrorRetryHandler(max_retry_count=rate_limit_retries),
        ServerErrorRetryHandler(max_retry_count=server_error_retries, interval_calculator=interval),
    ]


class SlackNotifier:
    """Posts alerts to Slack, by incoming webhook or by chat.postMessage.

    Give `webhook_url`, or `token` and `channel` (with `api_base_url` for a
    receiver other than slack.com), or an already built `client` (which keeps
    its own retry handlers and logger unless `retry_handlers` is given).
    `retry_handlers` replaces `default_retry_handlers()`.
    """

    def __init__(
        self,
        *,
        webhook_url: SecretStr | None = None,
        token: SecretStr | None = None,
        channel: str | None = None,
        api_base_url: str = SLACK_API_URL,
        client: WebhookClient | WebClient | None = None,
        timeout: int = 10,
        ssl: SSLContext | None = None,
        retry_handlers: list[RetryHandler] | None = None,
        clock: Clock = utc_now,
        ack_links: AckLinks | None = None,
    ) -> None:
        self.channel = channel
        self.ack_links = ack_links
        self.clock = clock
        self._local = threading.local()
        handlers = retry_handlers if retry_handlers is not None else default_retry_handlers()
        if client is not None:
            handlers = list(client.retry_handlers) if retry_handlers is None else handlers
            self.client = client
        elif webhook_url is not None:
            self.client = WebhookClient(
                webhook_url.get_secret_value(), timeout=timeout, ssl=ssl, logger=_quiet_logger()
            )
        elif token is not None and channel:
            self.client = WebClient(
                token=token.get_secret_value(),
                base_url=api_base_url,
                timeout=timeout,
                ssl=ssl,
                logger=_quiet_logger(),
            )
        else:
            raise ValueError("SlackNotifier needs webhook_url, token and channel, or client")
        if isinstance(self.client, WebClient) and not self.channel:
            raise ValueError("chat.postMessage needs a channel")
        # An injected client carries its own URL or token: redact those too.
        self._secrets = [s.get_secret_value() for s in (webhook_url, token) if s is not None]
        self._secrets += [str(getattr(self.client, name, "") or "") for name in ("url", "token")]
        # The wrappers report retries; the client keeps slack-sdk's handlers underneath.
        self.client.retry_handlers = [_ObservedRetries(h, self) for h in handlers]

    @classmethod
    def from_target(cls, target: SlackTarget, **kwargs: Any) -> SlackNotifier:
        return cls(
            webhook_url=target.webhook_url,
            token=target.token,
            channel=target.channel,
            api_base_url=target.api_base_url,
            **kwargs,
        )

    def send(self, alert: Alert) -> list[SendAttempt]:
        self._local.attempts = []
        text = fallback_text(alert)
        ack_url = (
            self.ack_links.url(alert.fingerprint)
            if self.ack_links is not None and alert.state == "triggered"
            else None
        )
        blocks = build_blocks(alert, ack_url)
        try:
            if isinstance(self.client, WebhookClient):
                final = self._send_webhook(text, blocks)
            else:
                final = self._send_api(text, blocks)
        except Exception as exc:  # urllib raises on refused/reset connections and timeouts
            final = SendAttempt(
                ok=False,
                status_code=None,
                reason=self._reason(f"{type(exc).__name__}: {exc}"),
                at=self.clock(),
                permanent=tls_verification_failed(exc),
            )
        attempts: list[SendAttempt] = self._local.attempts
        attempts.append(final)
        if not final.ok:
            log.warning(
                "slack delivery of %s failed: %s %s",
                alert.fingerprint,
                final.status_code or "",
                final.reason,
            )
        return attempts

    def _send_webhook(self, text: str, blocks: list[Block]) -> SendAttempt:
        assert isinstance(self.client, WebhookClient)
        response = self.client.send(text=text, blocks=blocks, unfurl_links=False)
        retry_after = parse_retry_after(_header(response.headers, "Retry-After"))
        body = response.body if isinstance(response.body, str) else ""
        reason = "ok" if response.status_code == 200 else self._reason(body or "no body")
        return http_attempt(response.status_code, reason, self.clock(), retry_after)

    def _send_api(self, text: str, blocks: list[Block]) -> SendAttempt:
        assert isinstance(self.client, WebClient) and self.channel
        try:
            response = self.client.chat_postMessage(
                channel=self.channel, text=text, blocks=blocks, unfurl_links=False
            )
        except SlackApiError as exc:
            status = exc.response.status_code
            data = exc.response.data if isinstance(exc.response.data, dict) else {}
            error = str(data.get("error") or f"HTTP {status}")
            retry_after = parse_retry_after(_header(exc.response.headers, "Retry-After"))
            attempt = http_attempt(status, self._reason(error), self.clock(), retry_after)
            if status == 200 and error in TRANSIENT_API_ERRORS:
                return SendAttempt(False, status, attempt.reason, attempt.at, retry_after)
            if status == 200:
                return SendAttempt(False, status, attempt.reason, attempt.at, None, permanent=True)
            return attempt
        return http_attempt(response.status_code, "ok", self.clock(), None)

    def _record_retry(self, response: HttpResponse | None, error: Exception | None) -> None:
        attempts = getattr(self._local, "attempts", None)
        if attempts is None:
            return
        if response is not None:
            body = (response.data or b"").decode("utf-8", "replace")
            retry_after = parse_retry_after(_header(response.headers, "Retry-After"))
            reason = self._reason(body or f"HTTP {response.status_code}")
            attempts.append(http_attempt(response.status_code, reason, self.clock(), retry_after))
        else:
            reason = self._reason(f"{type(error).__name__}: {error}")
            attempts.append(SendAttempt(False, None, reason, self.clock()))

    def _reason(self, text: str) -> str:
        return short(redact(text, *self._secrets))


def _escape(text: str) -> str:
    """Slack mrkdwn control characters; tenant names and summaries are user data."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def fallback_text(alert: Alert) -> str:
    """The notification text (and what clients without Block Kit show)."""
    if alert.state == "resolved":
        return _clip(f"Resolved: {alert.summary}", 3000)
    return _clip(f"{alert.severity.upper()}: {alert.summary}", 3000)


def build_blocks(alert: Alert, ack_url: str | None = None) -> list[Block]:
    """What happened, who, how much against what baseline, the likely cause, the query,
    and (`ack_url`) the signed link that acknowledges the shift as the new normal."""
    if alert.state == "resolved":
        status = ":white_check_mark: RESOLVED"
    else:
        status = f"{SEVERITY_EMOJI[alert.severity]} {alert.severity.upper()}"
    title = f"{status} · {alert.detector} · {alert.key}"
    blocks: list[Block] = [
        HeaderBlock(text=_clip(title, 150)),
        SectionBlock(text=MarkdownTextObject(text=_clip(_escape(alert.summary), 3000))),
    ]
    fields = [f"*{name}*\n{_escape(value)}" for name, value in who(alert).items()]
    fields.append(f"*Detector*\n`{_escape(alert.detector)}`")
    fields.append(f"*Window*\n{format_window(alert)}")
    if alert.state == "resolved":
        fields.append(f"*Triggered*\n{format_time(alert.triggered_at)}")
        fields.append(f"*Resolved*\n{format_time(alert.resolved_at)}")
        blocks.append(SectionBlock(fields=[_clip(f, 2000) for f in fields]))
    else:
        observed = format_amount(alert.value, alert.unit)
        against = f"threshold {format_amount(alert.threshold, alert.unit)}"
        if alert.baseline is not None:
            times = ratio(alert.value, alert.baseline)
            against = f"baseline {format_amount(alert.baseline, alert.unit)}, {against}"
            observed += f" ({times} baseline)" if times else ""
        fields.append(f"*Observed*\n{observed}")
        fields.append(f"*Compared with*\n{against}")
        blocks.append(SectionBlock(fields=[_clip(f, 2000) for f in fields]))
        cause = [f"*Likely cause:* {_escape(cause_label(alert.cause))}"]
        explanation = alert.evidence.get("cause_explanation")
        if explanation:
            cause[0] += f": {_escape(str(explanation))}"
        if ratios := cause_ratios(alert):
            cause.append("vs baseline: " + ", ".join(f"{_escape(n)} {v}" for n, v in ratios))
        cause += [
            f"• {_escape(name)}: {_escape(value)}" for name, value in supporting_evidence(alert)
        ]
        blocks.append(SectionBlock(text=MarkdownTextObject(text=_clip("\n".join(cause), 3000))))
    if ack_url is not None:
        blocks.append(
            SectionBlock(
                text=MarkdownTextObject(
                    text=f"<{ack_url}|Acknowledge as new normal> · or "
                    f"`spendstream alerts ack {alert_id(alert.fingerprint)}`"
                )
            )
        )
    if alert.query:
        query = _clip(alert.query, 2900)
        blocks.append(DividerBlock())
        blocks.append(
            SectionBlock(text=MarkdownTextObject(text=f"*Query* (ClickHouse)\n```{query}```"))
        )
    blocks.append(
        ContextBlock(
            elements=[
                MarkdownTextObject(
                    text=_clip(
                        f"fingerprint `{_escape(alert.fingerprint)}` · "
                        f"{alert.state} {format_time(alert.recorded_at)} · spendstream",
                        3000,
                    )
                )
            ]
        )
    )
    return blocks
