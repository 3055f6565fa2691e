"""In-stream spend state by event time: the spend agent (Faust plumbing), its tables, the
monitor that feeds detectors, and the spend configuration."""
