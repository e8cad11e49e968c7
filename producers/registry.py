"""Producer registry: ``type`` name -> plugin package. Adding a source is one line here plus its folder."""

PRODUCERS: dict[str, str] = {
    "hhpc": "producers.hhpc",
    "adc": "producers.adc",
    "shelly": "producers.shelly",
    "p1": "producers.p1",
    "sim": "producers.sim",
}
