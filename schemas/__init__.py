"""The data contracts of spendstream: pydantic v2 models, no I/O."""

from schemas.ledger import DeadLetterRow, LedgerRow
from schemas.usage_event import MAX_MESSAGE_BYTES, UsageEvent

__all__ = ["MAX_MESSAGE_BYTES", "DeadLetterRow", "LedgerRow", "UsageEvent"]
