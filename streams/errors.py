"""Errors that the CLI turns into one clear line and a non-zero exit."""


class SpendstreamError(Exception):
    """A failure the user can act on; its message is the one line printed."""

    exit_code = 2


class ConfigError(SpendstreamError):
    """Bad configuration: a missing pricing file, an invalid setting."""


class DataDirInUseError(SpendstreamError):
    """Another process owns the embedded ClickHouse data directory."""


class BrokerUnavailableError(SpendstreamError):
    """The Kafka broker cannot be reached."""


class MigrationChangedError(SpendstreamError):
    """A migration already applied to this ClickHouse was edited since."""
