"""scripts/bench runs every scenario end to end against xferd alone and writes the
figures as JSON.

Only a smoke test, at tiny sizes and without Prosody: it checks the shape and
plausibility of what is reported (every scenario's figures, the repeats with
their spread, the machine facts), never the speed.
"""

import json
import os
import subprocess

import pytest

from tests.harness import REPO

pytestmark = pytest.mark.timeout(180)


def test_bench_every_scenario_xferd_only(tmp_path):
    out = tmp_path / "bench.json"
    env = dict(os.environ)
    env.pop("XFERD_CONFIG", None)
    done = subprocess.run([str(REPO / "scripts" / "bench"), "--quick", "--no-prosody",
                           "--clients", "5", "--messages", "5", "--repeats", "2",
                           "--pace-rate", "200", "--pace-seconds", "0.5", "--idle", "20",
                           "--idle-cycles", "2", "--soak-clients", "3", "--soak-rate", "50",
                           "--soak-seconds", "1",
                           "--scenarios", "login,messages,idle,roster,migration,soak",
                           "--roster", "30", "--contacts", "6", "--json", str(out)],
                          capture_output=True, text=True, timeout=170, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for label in ("login rate", "message throughput", "paced latency p99",
                  "server RSS per idle connection", "roster fetch",
                  "XEP-0283: all contacts updated", "XEP-0015: all contacts updated"):
        assert label in done.stdout, label
    assert "chart: none" in done.stderr            # ratios need Prosody

    document = json.loads(out.read_text())
    assert document["parameters"]["clients"] == 5
    assert document["parameters"]["scenarios"] == ["login", "messages", "idle", "roster",
                                                   "migration", "soak"]
    assert document["machine"]["cpu_count"] >= 1
    assert document["machine"]["lxml"] and document["machine"]["python"]
    assert "prosody" not in document["results"] and document["ratios"] == {}
    xferd = document["results"]["xferd"]

    login = xferd["login"]
    assert login["repeats"] == 2 and len(login["runs"]) == 2
    assert login["attempted"] == login["succeeded"] == 5 and login["failed"] == 0
    assert login["logins_per_s"] > 0 and len(login["spread"]["logins_per_s"]) == 2
    assert 0 < login["p50_ms"] <= login["p99_ms"]
    assert login["server_cpu_s"] >= 0 and login["loadgen_cpu_s"] > 0

    messages = xferd["messages"]
    assert messages["delivered"] == messages["expected"] == 25 and not messages["timed_out"]
    assert messages["msgs_per_s"] > 0 and 0 < messages["p50_ms"] <= messages["p99_ms"]
    assert messages["server_cpu_s_per_1000"] >= 0

    paced = xferd["paced"]
    assert paced["sent"] == paced["delivered"] == 100 and not paced["timed_out"]
    assert 0 < paced["p50_ms"] <= paced["p99_ms"] <= paced["max_ms"]

    idle = xferd["idle"]
    assert idle["k_requested"] == idle["k_reached"] == 20 and idle["limited_by"] is None
    assert idle["kb_per_connection"] is not None and idle["rss_after_mb"] > 0
    assert idle["cycles"] == 2 and len(idle["rss_after_close_by_cycle_mb"]) == 2
    assert idle["rss_growth_over_cycles_mb"] is not None

    soak = xferd["soak"]
    assert soak["sessions"] == 3 and soak["sent"] == soak["delivered"] == 50
    assert soak["rss_end_mb"] > 0 and soak["rss_after_first_minute_mb"] is None   # 1 s run

    roster = xferd["roster"]
    assert roster["items"] == roster["expected"] == 30 and roster["bytes"] > 30 * 40
    assert roster["fetch_ms"] > 0 and roster["repeats"] == 2

    for section in ("moved", "transfer"):
        move = xferd[section]
        assert move["contacts"] == move["updated"] == 6, (section, move)
        assert 0 < move["half_updated_s"] <= move["all_updated_s"]
        assert move["tool_exit"] == 0, (section, move)
    assert document["parameters"]["fd_limit"]["soft"] >= 20 * 2
