"""Every XML namespace xferd speaks, said once. Grouped by where it is
defined; modules import the name instead of spelling the URI again."""

# XML itself
XML_NS = "http://www.w3.org/XML/1998/namespace"
XI_NS = "http://www.w3.org/2001/XInclude"

# RFC 6120: streams and their negotiation
STREAMS_NS = "http://etherx.jabber.org/streams"
CLIENT_NS = "jabber:client"
SERVER_NS = "jabber:server"
TLS_NS = "urn:ietf:params:xml:ns:xmpp-tls"
SASL_NS = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND_NS = "urn:ietf:params:xml:ns:xmpp-bind"
SESSION_NS = "urn:ietf:params:xml:ns:xmpp-session"            # RFC 3921, still asked for
STREAM_ERRORS_NS = "urn:ietf:params:xml:ns:xmpp-streams"
STANZA_ERRORS_NS = "urn:ietf:params:xml:ns:xmpp-stanzas"

# RFC 6121 and the XEPs the server implements
ROSTER_NS = "jabber:iq:roster"
ROSTERVER_FEATURE_NS = "urn:xmpp:features:rosterver"          # XEP-0237
PREAPPROVAL_FEATURE_NS = "urn:xmpp:features:pre-approval"     # RFC 6121 §3.4
DIALBACK_NS = "jabber:server:dialback"                        # XEP-0220
DIALBACK_FEATURE_NS = "urn:xmpp:features:dialback"
DATA_NS = "jabber:x:data"                                     # XEP-0004
DISCO_INFO_NS = "http://jabber.org/protocol/disco#info"       # XEP-0030
DISCO_ITEMS_NS = "http://jabber.org/protocol/disco#items"
CAPS_NS = "http://jabber.org/protocol/caps"                   # XEP-0115
PRIVATE_NS = "jabber:iq:private"                              # XEP-0049
VCARD_NS = "vcard-temp"                                       # XEP-0054
PUBSUB_NS = "http://jabber.org/protocol/pubsub"               # XEP-0060 / XEP-0163
PUBSUB_OWNER_NS = "http://jabber.org/protocol/pubsub#owner"
PUBSUB_EVENT_NS = "http://jabber.org/protocol/pubsub#event"
PUBSUB_ERRORS_NS = "http://jabber.org/protocol/pubsub#errors"
REGISTER_NS = "jabber:iq:register"                            # XEP-0077
REGISTER_FEATURE_NS = "http://jabber.org/features/iq-register"
CHATSTATES_NS = "http://jabber.org/protocol/chatstates"       # XEP-0085
LAST_NS = "jabber:iq:last"                                    # XEP-0012
VERSION_NS = "jabber:iq:version"                              # XEP-0092
PING_NS = "urn:xmpp:ping"                                     # XEP-0199
DELAY_NS = "urn:xmpp:delay"                                   # XEP-0203
HINTS_NS = "urn:xmpp:hints"                                   # XEP-0334
STANZA_ID_NS = "urn:xmpp:sid:0"                               # XEP-0359
BLOCKING_NS = "urn:xmpp:blocking"                             # XEP-0191
BLOCKING_ERRORS_NS = "urn:xmpp:blocking:errors"
PRIVACY_NS = "jabber:iq:privacy"                              # XEP-0016 (read from exports)
ACCOUNTXFER_NS = "jabber:iq:accountxfer"                      # XEP-0015
MOVED_NS = "urn:xmpp:moved:1"                                 # XEP-0283
PIE_NS = "urn:xmpp:pie:0"                                     # XEP-0227
PIE_SCRAM_NS = "urn:xmpp:pie:0#scram"
PIE_MAM_NS = "urn:xmpp:pie:0#mam"
PIE_LEGACY_NS = "http://www.xmpp.org/extensions/xep-0227.html#ns"   # ejabberd, older Prosody
MAM_NS = "urn:xmpp:mam:2"                                     # XEP-0313
MAM_EXTENDED_FEATURE = "urn:xmpp:mam:2#extended"
RSM_NS = "http://jabber.org/protocol/rsm"                     # XEP-0059
FORWARD_NS = "urn:xmpp:forward:0"                             # XEP-0297
MAM_IMPORT_NS = "urn:xferd:mam-import:0"                      # history hand-over (xferd's own)
