"""Producer registry: ``type`` name -> plugin package (which exposes ``PLUGIN``, see ``bus/plugin.py``).

Adding a source is its folder plus one line here. This table is also the one list of sources: the envelope's
``source`` field, the schema's enum and topic validation all derive from it. Plain data: importing it loads no
plugin.
"""

PRODUCERS: dict[str, str] = {
    "hhpc": "producers.hhpc",
    "adc": "producers.adc",
    "shelly": "producers.shelly",
    "p1": "producers.p1",
    "sim": "producers.sim",
    "fronius": "producers.fronius",
    "weather": "producers.weather",
}
