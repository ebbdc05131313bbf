"""What the benchmark reads from and does to processes: ports, start/stop, CPU, memory, fds.

Everything here reads /proc (Linux): CPU from /proc/PID/stat, memory from
/proc/PID/smaps_rollup (falling back to VmRSS in /proc/PID/status), so the
same numbers are taken from xferd, Prosody and the load generator itself.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import time

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A port that was free a moment ago (bind, release and hope another
    process does not take it before the server binds it). Only for Prosody,
    which cannot report the port a port-0 bind got; xferd servers bind port 0
    and report what they got (``read_status``)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(proc: subprocess.Popen, ports: list[int], timeout: float, describe) -> None:
    """Until every port accepts a connection; RuntimeError if *proc* dies or time runs out."""
    deadline = time.monotonic() + timeout
    waiting = list(ports)
    while waiting:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}:\n{describe()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"did not start listening on {waiting[0]}:\n{describe()}")
        try:
            socket.create_connection(("127.0.0.1", waiting[0]), timeout=0.5).close()
            waiting.pop(0)
        except OSError:
            time.sleep(0.05)


def read_status(proc: subprocess.Popen, path, ready, timeout: float, describe) -> dict:
    """The JSON status file a server writes (xferd's ``--ports-file``: pid,
    bound ports, reload count) once it is from *proc* and *ready(status)*
    holds; RuntimeError if *proc* dies or time runs out. A poll with a
    deadline: a file gives no notification. The server writes it whole
    (renamed into place), so a read sees the old or the new one."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}:\n{describe()}")
        try:
            status = json.loads(open(path).read())
        except (FileNotFoundError, ValueError):
            status = None
        if status is not None and status.get("pid") == proc.pid and ready(status):
            return status
        if time.monotonic() > deadline:
            raise RuntimeError(f"reported nothing in {path}:\n{describe()}")
        time.sleep(0.01)


def stop_process(proc: subprocess.Popen | None, timeout: float = 10) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def cpu_seconds(pid: int | str = "self") -> float:
    """utime + stime of *pid* from /proc/PID/stat, in seconds."""
    with open(f"/proc/{pid}/stat") as fh:
        text = fh.read()
    fields = text[text.rindex(")") + 2:].split()   # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK   # fields 14 and 15 of stat


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size: ``Rss`` of smaps_rollup, else ``VmRSS`` of status."""
    for path, key in ((f"/proc/{pid}/smaps_rollup", "Rss:"), (f"/proc/{pid}/status", "VmRSS:")):
        try:
            with open(path) as fh:
                for line in fh:
                    if line.startswith(key):
                        return int(line.split()[1]) * 1024
        except OSError:
            continue
    raise RuntimeError(f"cannot read the memory of process {pid}")


def raise_fd_limit() -> dict:
    """Soft RLIMIT_NOFILE up to the hard one; the servers started later inherit it.

    The idle-connections scenario needs one descriptor per connection on each side.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    before = soft
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return {"soft_before": before, "soft": soft, "hard": hard}


def fd_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def open_fds(pid: int | str = "self") -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def fd_limit_of(pid: int) -> int | None:
    """The soft 'Max open files' of another process (/proc/PID/limits)."""
    try:
        with open(f"/proc/{pid}/limits") as fh:
            for line in fh:
                if line.startswith("Max open files"):
                    value = line.split()[3]
                    return None if value == "unlimited" else int(value)
    except OSError:
        pass
    return None


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


class ServerProcess:
    """Start-up and shut-down shared by the servers under test."""

    name = "server"
    proc: subprocess.Popen | None = None
    workdir = None
    _log = None

    def listening_ports(self) -> list[int]:
        raise NotImplementedError

    def launch(self, args: list[str], out_path, env: dict) -> None:
        """Start the process; ``wait_ready`` waits for its listeners (so several can
        start at once)."""
        self._log = open(out_path, "ab")
        self.proc = subprocess.Popen(args, cwd=self.workdir, stdout=self._log,
                                     stderr=subprocess.STDOUT, env=env)

    def wait_ready(self, timeout: float = 30) -> None:
        try:
            wait_listening(self.proc, self.listening_ports(), timeout, self.log)
        except RuntimeError as exc:
            self.stop()
            raise RuntimeError(f"{self.name} {exc}") from None

    def start(self, timeout: float = 30) -> None:
        self.spawn()
        self.wait_ready(timeout)

    def spawn(self) -> None:
        raise NotImplementedError

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        stop_process(self.proc)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log(self) -> str:
        raise NotImplementedError
