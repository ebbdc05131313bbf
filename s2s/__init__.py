"""Server-to-server federation (RFC 6120 s2s, XEP-0220 dialback). Resolution, outbound
routes, inbound streams and dialback, one file each."""
