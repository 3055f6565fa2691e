"""Kafka plumbing that any broker needs: topic names and specs, admin (create topics, wait
for the broker), consumer-group progress."""
