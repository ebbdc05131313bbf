"""Network glue: everything that owns a socket. asyncio connections over the
sans-IO stream (net), client sessions driving the negotiation table (c2s),
TLS contexts and certificates (tls), the stanza trace, and the per-peer
limits (ratelimit, throttle)."""
