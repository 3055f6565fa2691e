"""The live spend dashboard the worker serves at `/`: pages, JSON endpoints, panels."""

from streams.dashboard.routes import LedgerUnavailable, register_dashboard

__all__ = ["LedgerUnavailable", "register_dashboard"]
