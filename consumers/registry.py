"""Consumer registry: ``type`` name -> plugin package (which exposes ``PLUGIN``, see ``bus/plugin.py``).

Adding a consumer is its folder plus one line here. Plain data: importing it loads no plugin.
"""

CONSUMERS: dict[str, str] = {
    "store": "consumers.store",
    "exporter": "consumers.exporter",
    "api": "consumers.api",
    "homeassistant": "consumers.homeassistant",
    "aggregate": "consumers.aggregate",
    "relay": "consumers.relay",
}
