"""The streaming edge of spendstream: Faust app, sinks, broker, CLI."""
