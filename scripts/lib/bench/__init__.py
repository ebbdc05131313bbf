"""scripts/bench: xferd and Prosody side by side, under the same load generator.

__main__.py        the runner: arguments, the scenario groups, output files
loadgen.py         the clients: raw asyncio streams + xferd's sans-IO parser and SCRAM
login.py           scenario 1, login rate
messages.py        scenario 2, message throughput (closed loop) and paced latency
idle.py            scenario 3, memory per idle connection
roster.py          scenario 4, roster load
migration.py       scenario 5, XEP-0283 and XEP-0015 at scale (four servers, s2s)
seed.py            accounts and rosters put into storage before a run
xferd_server.py    xferd under test
prosody_server.py  Prosody under test (Debian's package)
dns.py             a loopback DNS responder, for Prosody's s2s in scenario 5
procs.py           /proc readings (CPU, RSS, fds), start/stop, RLIMIT_NOFILE
report.py          medians and spreads, ratios, table, JSON
chart.py           the PNG of the ratios
"""
