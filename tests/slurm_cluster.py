"""A real single-node Slurm (Debian's slurm-wlm + munge) in a private temporary folder.

Everything the cluster needs lives in its own folder: ``slurm.conf`` (clients and daemons find it
through ``SLURM_CONF``), a munge key and socket (``AuthInfo=socket=...``), state, spool, logs and
pid files, and free TCP ports, so it neither needs nor disturbs a system-wide Slurm or munge.
``start()`` raises ``ClusterError`` with the reason when the cluster cannot start.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "sinfo")


class ClusterError(RuntimeError):
    """The single-node cluster could not start; the message says why."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def slurm_conf(root: Path, host: str, cpus: int, memory_mb: int, ports: tuple[int, int]) -> str:
    """A one-node ``slurm.conf``: no cgroups, no accounting daemon, everything under ``root``."""
    return "\n".join([
        "ClusterName=ketabids-test",
        f"SlurmctldHost={host}",
        "SlurmUser=root",
        "AuthType=auth/munge",
        f"AuthInfo=socket={root / 'munge' / 'munge.socket'}",
        f"SlurmctldPort={ports[0]}",
        f"SlurmdPort={ports[1]}",
        f"StateSaveLocation={root / 'state'}",
        f"SlurmdSpoolDir={root / 'spool'}",
        f"SlurmctldPidFile={root / 'slurmctld.pid'}",
        f"SlurmdPidFile={root / 'slurmd.pid'}",
        f"SlurmctldLogFile={root / 'slurmctld.log'}",
        f"SlurmdLogFile={root / 'slurmd.log'}",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "MpiDefault=none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core_Memory",
        "ReturnToService=2",
        "SchedulerParameters=sched_interval=2",
        f"NodeName={host} CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN",
        f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP",
        "",
    ])  # fmt: skip


class SlurmCluster:
    """Start with ``start()``, use ``env`` for every Slurm client, end with ``stop()``."""

    def __init__(self, cpus: int = 2, memory_mb: int = 8000) -> None:
        self.cpus, self.memory_mb = cpus, memory_mb
        self.root = Path(tempfile.mkdtemp(prefix="ketabids-slurm-"))
        self.env = {**os.environ, "SLURM_CONF": str(self.root / "slurm.conf")}
        self._processes: list[subprocess.Popen] = []

    def _spawn(self, *command: str, log: str) -> None:
        with open(self.root / log, "ab") as out:
            self._processes.append(
                subprocess.Popen(command, env=self.env, stdout=out, stderr=subprocess.STDOUT)
            )

    def _why(self) -> str:
        logs = [
            self.root / "munge" / "munged.log",
            *sorted(self.root.glob("*.log")),
            *self.root.glob("*.out"),
        ]
        tails = [f"{p.name}: {p.read_text(errors='replace')[-600:]}" for p in logs if p.is_file()]
        return " | ".join(tails) or "no daemon log written"

    def start(self, timeout: float = 60) -> SlurmCluster:
        """Write the config and key, start munged, slurmctld and slurmd; wait until the node is idle."""
        missing = [name for name in DAEMONS if shutil.which(name) is None]
        if missing:
            raise ClusterError(f"not on PATH: {', '.join(missing)} (apt-get install slurm-wlm munge)")
        if os.geteuid() != 0:
            raise ClusterError("a private Slurm needs root (slurmd starts jobs as their users)")
        munge_user = pwd.getpwnam("munge")
        self.root.chmod(0o755)  # munged (user munge) must reach its own folder
        munge = self.root / "munge"
        munge.mkdir(mode=0o755)  # munged: socket folder executable by all
        for name in ("state", "spool"):
            (self.root / name).mkdir()
        key = munge / "munge.key"
        subprocess.run(["mungekey", "-c", "-k", str(key)], check=True, capture_output=True)
        for path in (munge, key):
            os.chown(path, munge_user.pw_uid, munge_user.pw_gid)
        host = socket.gethostname().split(".")[0]
        ports = (_free_port(), _free_port())
        (self.root / "slurm.conf").write_text(slurm_conf(self.root, host, self.cpus, self.memory_mb, ports))
        munged = ["munged", "--foreground", f"--socket={munge / 'munge.socket'}", f"--key-file={key}"]
        munged += [f"--pid-file={munge / 'munged.pid'}", f"--seed-file={munge / 'munged.seed'}"]
        munged += [f"--log-file={munge / 'munged.log'}"]
        self._spawn("setpriv", f"--reuid={munge_user.pw_uid}", f"--regid={munge_user.pw_gid}",
                    "--clear-groups", *munged, log="munged.log")  # fmt: skip
        self._wait(lambda: (munge / "munge.socket").exists(), 15, "munged did not create its socket")
        self._spawn("slurmctld", "-D", "-c", "-i", log="slurmctld.out")
        self._spawn("slurmd", "-D", "-c", log="slurmd.out")
        self._wait(self._node_idle, timeout, "the node did not become idle")
        return self

    def _node_idle(self) -> bool:
        result = subprocess.run(
            ["sinfo", "-h", "-o", "%t"], env=self.env, capture_output=True, text=True, check=False
        )
        return result.returncode == 0 and result.stdout.strip() == "idle"

    def _queue(self) -> str:
        result = subprocess.run(["squeue", "-h"], env=self.env, capture_output=True, text=True, check=False)
        return result.stdout.strip() if result.returncode == 0 else ""

    @staticmethod
    def _wait_quietly(ready, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not ready() and time.monotonic() < deadline:
            time.sleep(0.5)

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            dead = [p.args[0] for p in self._processes if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                reason = f"{', '.join(dead)} exited" if dead else f"after {timeout:.0f} s"
                logs = self._why()
                self.stop()
                raise ClusterError(f"Slurm test cluster: {what} ({reason}); {logs}")
            time.sleep(0.5)

    def stop(self) -> None:
        """Cancel the cluster's jobs, stop the daemons this object started, remove the folder."""
        if self._processes and self._processes[-1].poll() is None:  # slurmd still up: end its jobs
            user = pwd.getpwuid(os.geteuid()).pw_name
            subprocess.run(
                ["scancel", "-u", user], env=self.env, capture_output=True, timeout=30, check=False
            )
            self._wait_quietly(lambda: not self._queue(), 30)
        for process in reversed(self._processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self._processes.clear()
        shutil.rmtree(self.root, ignore_errors=True)
