"""scripts/bench: xferd and Prosody side by side, under the same load generator.

servers.py  the servers under test (subprocesses on loopback, own config and data)
loadgen.py  the clients: raw asyncio streams + xferd's sans-IO parser and SCRAM
report.py   table and JSON
__main__.py the runner: arguments, scenarios, one server at a time
"""
