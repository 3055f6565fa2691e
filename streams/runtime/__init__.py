"""The worker: the Faust app composed from the other packages, its web views and metrics,
and the `spendstream worker` entry."""
