"""Consumer registry: ``type`` name -> plugin package. Adding a sink or consumer is one line here."""

CONSUMERS: dict[str, str] = {
    "store": "consumers.store",
    "exporter": "consumers.exporter",
    "aggregate": "consumers.aggregate",
}
