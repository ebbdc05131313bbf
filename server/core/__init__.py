"""The server core: the process (service), where a stanza goes (router), one
domain's state (hosts), named events and module declarations (events,
module), the one roster service (rosters), and account life cycle
(accounts). Feature modules build on it; it imports none of them."""
