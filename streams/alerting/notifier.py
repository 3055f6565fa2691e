"""What every notifier returns, and the helpers they share.

A notifier's `send(alert)` is blocking (slack-sdk uses urllib, pagerduty uses
httpx2 and `time.sleep` between its own retries); the delivery queue calls it
through `asyncio.to_thread`. It returns every HTTP attempt it made, the client
library's internal retries included, so each one becomes an `alert_deliveries`
row; the last attempt decides what the queue does next.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from ssl import SSLCertVerificationError
from typing import Protocol
from urllib.parse import quote, urlsplit

from schemas.alert import Alert

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class SendAttempt:
    """One HTTP attempt. `ok`: delivered; `permanent`: retrying cannot help (e.g. 400, 404)."""

    ok: bool
    status_code: int | None
    reason: str
    at: datetime
    retry_after: float | None = None  # seconds the receiver asked us to wait
    permanent: bool = False


class Notifier(Protocol):
    def send(self, alert: Alert) -> list[SendAttempt]:
        """Deliver one alert state; blocking; never raises for delivery failures."""
        ...


def is_transient_status(status: int) -> bool:
    """429, 408 and 5xx may succeed later; any other 4xx will fail the same way again."""
    return status in (408, 425, 429) or status >= 500


def http_attempt(status: int, reason: str, at: datetime, retry_after: float | None) -> SendAttempt:
    ok = 200 <= status < 300
    return SendAttempt(
        ok=ok,
        status_code=status,
        reason=reason,
        at=at,
        retry_after=retry_after,
        permanent=not ok and not is_transient_status(status),
    )


# A path segment at least this long is treated as secret (a webhook's token part).
SECRET_SEGMENT_LENGTH = 8


def secret_forms(secret: str) -> set[str]:
    """Every form in which `secret` may show up in an error: itself, URL-quoted, and for
    a URL its path, its query and each long path segment (a client's error often
    names only the path, /services/T0/B0/<token>).

    >>> sorted(secret_forms("https://hooks.example/services/T0/B0/abcdefgh12?x=1"))[:3]
    ['/services/T0/B0/abcdefgh12', '/services/T0/B0/abcdefgh12?x=1', 'abcdefgh12']
    """
    forms = {secret, quote(secret, safe=""), quote(secret)}
    parsed = urlsplit(secret)
    if parsed.scheme and parsed.netloc:
        forms |= {parsed.path, f"{parsed.path}?{parsed.query}" if parsed.query else ""}
        forms |= {quote(parsed.path), parsed.query, parsed.password or ""}
        forms |= {p for p in parsed.path.split("/") if len(p) >= SECRET_SEGMENT_LENGTH}
    return {form for form in forms if len(form) >= SECRET_SEGMENT_LENGTH or form == secret}


def redact(text: str, *secrets: str) -> str:
    """Belt and braces: no error text that reaches a log or a row may carry a secret,
    in any of its forms."""
    forms = {form for secret in secrets if secret for form in secret_forms(secret)}
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, "***")
    return text


def short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def tls_verification_failed(exc: BaseException) -> bool:
    """Whether `exc`, or an error it wraps (urllib's URLError, pagerduty's Error), is the
    receiver's certificate failing verification: a permanent failure for every notifier."""
    seen: BaseException | None = exc
    for _ in range(10):  # wrapping chains are short; never loop on a cycle
        if seen is None:
            return False
        if isinstance(seen, SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
