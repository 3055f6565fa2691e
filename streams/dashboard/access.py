"""Who may read the dashboard's data: the one check every dashboard endpoint makes.

A request must carry the analyst token as `Authorization: Bearer <token>`, as POST
/v1/query requires (the worker always has one: configured, or generated into the data
dir, see streams/auth.py). The page itself holds
no figures; it asks for the token and keeps it in the tab's sessionStorage.
"""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from streams.auth import bearer_token, same_token


def authorized(request: Any, token: SecretStr | None) -> bool:
    if token is None:
        return True
    return same_token(bearer_token(request), token)
