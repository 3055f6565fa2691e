"""Helpers shared by every test directory: waiting, HTTP(S) receivers, TLS."""
