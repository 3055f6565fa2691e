"""The price catalog (pricing file over genai-prices) and the cost engine that turns a
validated event into a ledger row."""
