"""Errors of the schema layer, which imports nothing from `streams/`."""


class ConfigFileError(ValueError):
    """A configuration file that cannot be read or does not validate. Its message is
    one line naming the file and the field; the edge that loads the file turns it into
    `streams.errors.ConfigError` (one line at the CLI, exit code 2)."""
