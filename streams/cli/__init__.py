"""The `spendstream` command: one entry, its sub-commands and their output."""
