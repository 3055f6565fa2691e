"""Who may read the dashboard's data: the one check every dashboard endpoint makes.

With an analyst token set (`SPENDSTREAM_ANALYST_TOKEN`), a request must carry
`Authorization: Bearer <token>`, as POST /v1/query requires. The page itself holds
no figures; it asks for the token and keeps it in the tab's sessionStorage.
"""

from __future__ import annotations

import hmac
from typing import Any

from pydantic import SecretStr


def authorized(request: Any, token: SecretStr | None) -> bool:
    if token is None:
        return True
    given = request.headers.get("Authorization", "").removeprefix("Bearer ")
    return hmac.compare_digest(given.encode(), token.get_secret_value().encode())
