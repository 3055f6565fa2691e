"""Broker tuning that every consumer of ours shares, whatever client it uses.

Fetch wait. The embedded broker holds a Fetch for its whole max wait even when records
arrive meanwhile (measured: 1.23 s from send to receive with Faust's fixed 1,500 ms,
37 ms with 100 ms). Each costed message would wait that long before the spend agent
and its detectors see it, and each usage message before it is ledgered, so the ingest
consumer and Faust's consumer both ask for `FETCH_MAX_WAIT_MS`. A busy consumer never
waits: records are already there when it fetches.
"""

FETCH_MAX_WAIT_MS = 100
