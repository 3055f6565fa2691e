"""The embedded default on one machine: child processes, the embedded broker, the stack,
`dev`, `simulate` and `replay`."""
