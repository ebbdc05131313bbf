"""Server-to-server federation (RFC 6120 s2s, XEP-0220 dialback). Arrives with issue 4."""
