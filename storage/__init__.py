"""Storage: the interfaces the server uses (api.py) and the SQLite backend."""
