"""PagerDuty: trigger and resolve through `pagerduty.EventsApiV2Client`, dedup_key = fingerprint.

The client is an httpx2 client that retries inside `request()` with blocking
`time.sleep`: on network errors (3 times), on 500-504, and on 429 *without
limit*. A receiver that throttles us for an hour would then hold a thread for
an hour and ignore Retry-After. So the notifier configures the client's
documented retry attributes: no network retries and no 5xx retries (the
delivery queue retries with backoff and records each attempt), and 429 capped
at the library's minimum of one retry; the queue honours Retry-After after
that. An httpx2 response hook reports every response, library retries included.

A network failure is reported with the httpx2 error the client wraps (its own
message says only "Non-transient network error"), so a row says "ReadTimeout"
or "ConnectError: [SSL: CERTIFICATE_VERIFY_FAILED] ...". A certificate that
fails verification is a permanent failure: retrying cannot help until someone
fixes the receiver or `verify`, and retrying for ever would hold back every
later alert on the channel.

The base URL must be https:// (the client refuses anything else); tests point
it at a self-signed HTTPS receiver on 127.0.0.1.
"""

from __future__ import annotations

import logging
import ssl
import threading
from typing import Any

import pagerduty
from pydantic import SecretStr

from schemas.alert import Alert
from schemas.spend_config import PAGERDUTY_EVENTS_URL, PagerDutyTarget
from streams.alerting.notifier import (
    Clock,
    SendAttempt,
    http_attempt,
    redact,
    short,
    tls_verification_failed,
    utc_now,
)
from streams.alerting.render import cause_label, details
from streams.retrying import parse_retry_after

log = logging.getLogger(__name__)

MAX_SUMMARY_LENGTH = 1024  # PagerDuty truncates (and warns) beyond this


class PagerDutyNotifier:
    """Sends a trigger (with custom_details = evidence) or a resolve per alert state."""

    def __init__(
        self,
        routing_key: SecretStr | None = None,
        *,
        base_url: str = PAGERDUTY_EVENTS_URL,
        verify: bool | ssl.SSLContext = True,
        timeout: int = 10,
        rate_limit_sleep: float = 1.0,
        source: str = "spendstream",
        client: pagerduty.EventsApiV2Client | None = None,
        clock: Clock = utc_now,
    ) -> None:
        if client is None:
            if routing_key is None:
                raise ValueError("PagerDutyNotifier needs routing_key or client")
            client = pagerduty.EventsApiV2Client(
                routing_key.get_secret_value(), base_url=base_url, verify=verify
            )
        self._secret = str(getattr(client.auth_method, "secret", "") or "")
        self.client = client
        self.source = source
        self.clock = clock
        self._local = threading.local()
        client.timeout = timeout
        client.max_network_attempts = 0
        client.retry = {429: 1}
        # ApiClient sleeps sleep_timer x sleep_timer_base before its one 429 retry.
        client.sleep_timer = rate_limit_sleep / max(client.sleep_timer_base, 1)
        hooks = dict(client.event_hooks)
        hooks["response"] = [*hooks.get("response", []), self._on_response]
        client.event_hooks = hooks

    @classmethod
    def from_target(cls, target: PagerDutyTarget, **kwargs: Any) -> PagerDutyNotifier:
        return cls(target.routing_key, base_url=target.base_url, verify=target.verify_tls, **kwargs)

    def send(self, alert: Alert) -> list[SendAttempt]:
        self._local.responses = []
        final: SendAttempt | None = None
        try:
            if alert.state == "triggered":
                self.client.trigger(
                    summary=alert.summary[:MAX_SUMMARY_LENGTH],
                    source=self.source + (f"/{alert.tenant_id}" if alert.tenant_id else ""),
                    dedup_key=alert.dedup_key,
                    severity=alert.severity,
                    payload={
                        "component": alert.detector,
                        "group": alert.tenant_id or alert.key,
                        "class": cause_label(alert.cause),
                        "timestamp": alert.triggered_at.isoformat(),
                    },
                    custom_details=details(alert),
                )
            else:
                self.client.resolve(alert.dedup_key)
        except pagerduty.HttpError:
            # The response hook recorded the status (a 2xx with an odd body was still
            # accepted); its last response is the final attempt.
            pass
        except Exception as exc:  # pagerduty.Error, or httpx2 errors the client does not wrap
            final = self._failure(exc)
        attempts: list[SendAttempt] = self._local.responses
        if final is not None:
            attempts.append(final)
        if not attempts:
            attempts.append(SendAttempt(False, None, "no response", self.clock()))
        if not attempts[-1].ok:
            log.warning(
                "pagerduty %s of %s failed: %s %s",
                alert.action,
                alert.fingerprint,
                attempts[-1].status_code or "",
                attempts[-1].reason,
            )
        return attempts

    def _on_response(self, response: Any) -> None:
        responses = getattr(self._local, "responses", None)
        if responses is None:
            return
        response.read()  # httpx calls response hooks before the body is read
        status = response.status_code
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        if 200 <= status < 300:
            reason = "accepted"
        else:
            reason = self._reason(response.text or f"HTTP {status}")
        responses.append(http_attempt(status, reason, self.clock(), retry_after))

    def _failure(self, exc: Exception) -> SendAttempt:
        text = str(exc) if isinstance(exc, pagerduty.Error) else f"{type(exc).__name__}: {exc}"
        cause = exc.__cause__
        if cause is not None:
            # Cause first: the client's message names the endpoint, not what went wrong.
            text = f"{type(cause).__name__}: {cause} ({text})"
        return SendAttempt(
            False,
            None,
            self._reason(text),
            self.clock(),
            permanent=tls_verification_failed(exc),
        )

    def _reason(self, text: str) -> str:
        return short(redact(text, self._secret))
