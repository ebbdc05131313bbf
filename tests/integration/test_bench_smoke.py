"""scripts/bench runs end to end against xferd alone and writes the figures as JSON.

Only a smoke test: five clients, the login scenario, no Prosody. It checks the
shape and plausibility of what is reported, never the speed.
"""

import json
import os
import subprocess

from tests.harness import REPO


def test_bench_quick_login_xferd_only(tmp_path):
    out = tmp_path / "bench.json"
    env = dict(os.environ)
    env.pop("XFERD_CONFIG", None)
    done = subprocess.run([str(REPO / "scripts" / "bench"), "--quick", "--scenarios", "login",
                           "--clients", "5", "--no-prosody", "--json", str(out)],
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert "login rate" in done.stdout and "xferd" in done.stdout

    document = json.loads(out.read_text())
    assert document["parameters"]["clients"] == 5
    assert document["parameters"]["scenarios"] == ["login"]
    assert document["machine"]["cpu_count"] >= 1
    assert document["machine"]["lxml"] and document["machine"]["python"]
    assert "prosody" not in document["results"] and document["ratios"] == {}

    login = document["results"]["xferd"]["login"]
    assert login["attempted"] == login["succeeded"] == 5 and login["failed"] == 0
    assert login["logins_per_s"] > 0
    assert 0 < login["p50_ms"] <= login["p99_ms"]
    assert login["server_cpu_s"] >= 0 and login["loadgen_cpu_s"] > 0
    assert "messages" not in document["results"]["xferd"]
