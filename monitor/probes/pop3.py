"""Placeholder until the pop3 prober lands."""
from monitor.probes.options import ConnectionOptions as Options
TLS_MODES = ("none",)
async def probe(target, options, *, deadline):
    raise NotImplementedError
