"""The operator's word on an alert: acknowledged as the new normal, or snoozed.

- An acknowledgement ("ack") says the shift an alert paged for is expected: the
  rolling median of its tenant's keys is held at least at the level acknowledged
  (the highest hourly spend since the incident began) from the incident's hour for
  the detector's lookback, so the same shift does not page again and a further jump
  of k times it still does (`RollingMedianDetector.set_acknowledged`).
- An ack also raises the retry-storm detector's usual rates for the same keys
  (`RetryStormDetector.set_acknowledged`).
- A snooze holds back the pages of a key (and of its sub-keys: `tenant:acme` covers
  `tenant:acme/workflow:x`) until it ends; what it held back is recorded as 'snoozed'
  alert states and pages when it ends if still true (`streams.spend.incidents`).

Both are rows of the `alert_acknowledgements` table (sql/045_alert_acknowledgements.sql),
read back at start, so a restart keeps them. The Slack link to acknowledge an alert
carries an HMAC of the alert's id under a secret of the data dir (`tokens.json`,
`alert_link`): it authorises that one alert's ack and nothing else.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from pydantic import SecretStr

if TYPE_CHECKING:
    from streams.ledger.remote import Reader

ACKS_TABLE = "alert_acknowledgements"
ACK_COLUMNS = ("alert_id", "key", "kind", "level", "since", "until", "by", "note", "at")
Kind = Literal["ack", "snooze"]
_DURATION = re.compile(r"^\s*(\d+)\s*([mhd])\s*$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def alert_id(fingerprint: str) -> str:
    """A short id for an alert, safe in a URL path (fingerprints hold '/', '|', '+')."""
    return hashlib.sha256(fingerprint.encode()).hexdigest()[:16]


def parse_duration(text: str) -> timedelta:
    """'30m', '4h', '2d'."""
    match = _DURATION.match(text)
    if match is None or int(match[1]) == 0:
        raise ValueError(f"a duration like 30m, 4h or 2d, not {text!r}")
    return timedelta(**{_UNITS[match[2]]: int(match[1])})


@dataclass(frozen=True)
class Acknowledgement:
    alert_id: str  # empty for a snooze given by key
    key: str
    kind: Kind
    level: Decimal | None  # ack: the hourly spend acknowledged as normal for `key`
    since: datetime  # ack: the incident's first hour; snooze: when it was given
    until: datetime
    by: str
    note: str
    at: datetime

    def covers(self, key: str) -> bool:
        return key == self.key or key.startswith(self.key + "/")

    def as_json(self) -> dict[str, Any]:
        values = asdict(self)
        for name in ("since", "until", "at"):
            values[name] = values[name].isoformat()
        values["level"] = None if self.level is None else str(self.level)
        return values

    def row(self) -> list[Any]:
        values = asdict(self)
        return [values[column] for column in ACK_COLUMNS]


class AcknowledgementBook:
    """The acknowledgements and snoozes in force (and those given, for listing)."""

    def __init__(self) -> None:
        self.given: list[Acknowledgement] = []

    def add(self, ack: Acknowledgement) -> None:
        self.given.append(ack)

    def snoozed(self, key: str, now: datetime) -> Acknowledgement | None:
        """The snooze holding back pages of `key` at `now`, if any."""
        for ack in self.given:
            if ack.kind == "snooze" and ack.covers(key) and ack.since <= now < ack.until:
                return ack
        return None

    def in_force(self, now: datetime) -> list[Acknowledgement]:
        return [ack for ack in self.given if ack.until > now]


def link_token(secret: SecretStr, alert: str) -> str:
    """The token of the Slack link that acknowledges alert `alert` (its id)."""
    return hmac.new(secret.get_secret_value().encode(), alert.encode(), hashlib.sha256).hexdigest()


def valid_link_token(secret: SecretStr, alert: str, token: str | None) -> bool:
    return token is not None and hmac.compare_digest(link_token(secret, alert), token)


@dataclass(frozen=True)
class AckLinks:
    """Builds the "Acknowledge as new normal" link of a page."""

    base_url: str
    secret: SecretStr

    def url(self, fingerprint: str) -> str:
        ident = alert_id(fingerprint)
        token = link_token(self.secret, ident)
        return f"{self.base_url.rstrip('/')}/v1/alerts/{ident}/ack?token={token}"


def read_acknowledgements(reader: Reader) -> list[Acknowledgement]:
    """Every acknowledgement and snooze recorded, oldest first (blocking)."""
    result = reader.query(f"SELECT {', '.join(ACK_COLUMNS)} FROM {ACKS_TABLE} ORDER BY at")
    acks = []
    for row in result.result_rows:
        values = dict(zip(ACK_COLUMNS, row, strict=True))
        for name in ("since", "until", "at"):
            if values[name].tzinfo is None:  # chdb returns DateTime64 naive
                values[name] = values[name].replace(tzinfo=UTC)
        values["level"] = None if values["level"] is None else Decimal(str(values["level"]))
        acks.append(Acknowledgement(**values))
    return acks


def write_acknowledgements(client: Any, acks: list[Acknowledgement]) -> None:
    """Insert (blocking, on the writer's session)."""
    client.insert(ACKS_TABLE, [ack.row() for ack in acks], column_names=list(ACK_COLUMNS))
