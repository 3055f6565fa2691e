"""Ownership from the ingest key: stamped on events that omit it, and events
that claim someone else's are refused.

A key always names a tenant, and may name a team and a project. An event may
leave those fields out (they are stamped from the key) or repeat the key's
values; any other value is a forgery attempt or a misrouted producer, and is
rejected with reason `ownership_mismatch` rather than silently rewritten, so
the producer learns about it. A key without a team may write any team's
events of its tenant. The project has no field of its own in the contract: it
travels as the tag `project`.
"""

from __future__ import annotations

from typing import Any

from streams.http_ingest.keys import KeyScope

OWNERSHIP_MISMATCH = "ownership_mismatch"
PROJECT_TAG = "project"


class OwnershipMismatch(ValueError):
    """An event claims a tenant, team or project its key does not cover."""

    reason = OWNERSHIP_MISMATCH


def _claimed(value: Any) -> str | None:
    """The value an event claims, or None when it claims nothing."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    # A non-string claim can never equal the key's value.
    return repr(value)


def apply_scope(element: dict[str, Any], scope: KeyScope) -> dict[str, Any]:
    """A copy of `element` with the key's ownership stamped on; raises
    `OwnershipMismatch` when the element claims other owners."""
    checks = [("tenant_id", scope.tenant_id, element.get("tenant_id"))]
    if scope.team_id:
        checks.append(("team_id", scope.team_id, element.get("team_id")))
    tags = element.get("tags")
    if scope.project and isinstance(tags, dict):
        checks.append((f"tags.{PROJECT_TAG}", scope.project, tags.get(PROJECT_TAG)))

    for field, allowed, value in checks:
        claimed = _claimed(value)
        if claimed is not None and claimed != allowed:
            raise OwnershipMismatch(
                f"{field} {claimed[:64]!r} is not the ingest key's {field} {allowed!r}"
            )

    stamped = dict(element)
    stamped["tenant_id"] = scope.tenant_id
    if scope.team_id:
        stamped["team_id"] = scope.team_id
    if scope.project:
        if tags is None:
            stamped["tags"] = {PROJECT_TAG: scope.project}
        elif isinstance(tags, dict):
            stamped["tags"] = {**tags, PROJECT_TAG: scope.project}
        # Tags that are not an object stay as sent: validation rejects them.
    return stamped
