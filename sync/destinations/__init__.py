"""Destinations (ESPs): the Protocol and spec in :mod:`.base`, one module per vendor (plus its ``*_api`` seam),
the registry in :mod:`.registry`."""
