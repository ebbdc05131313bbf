"""Features, one module each. Every module has ``setup(host)``, which hooks
its handlers into ``host.events`` and adds its disco features; see
``server/core/events.py`` for the event names."""
