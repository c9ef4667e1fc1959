"""A real single-node SLURM cluster on 127.0.0.1 for the SLURM integration test.

Debian's SLURM (installed with apt when missing), its own munged, slurmctld and slurmd with
state, logs and pid files under one scratch folder, on ports of their own. The configuration
must be /etc/slurm/slurm.conf: the SLURM executor strips ``SLURM_*`` variables (SLURM_CONF too)
before it runs a job step, so written there, marked as ours, and removed when the cluster stops;
one that is not ours is never replaced. Two partitions: ``cpu`` (default) and ``gpu``, the latter
with two pretend GPUs (a gres backed by /dev/null and /dev/zero), enough for scheduling. Daemons are
stopped by the pids in their pid files: those this module started, and those a killed earlier
run left behind, which is what lets the test run twice on one machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
COMMANDS = ["slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "munged"]
DAEMONS = ["slurmd", "slurmctld", "munged"]  # stopped in this order
SCRATCH = Path("/tmp/seqrerank-slurm")
CONTROLLER_PORT, NODE_PORT = 16817, 16818

ETC = Path("/etc/slurm")
MARK = "# Written by seqrerank's tests/slurm_cluster.py, removed when its test cluster stops.\n"
SLURM_CONF = """\
ClusterName=seqrerank-ci
SlurmctldHost=localhost
SlurmctldPort={controller_port}
SlurmdPort={node_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={root}/munge.socket
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
# Finished jobs stay visible to squeue/scontrol (Snakemake's status command) for 10 minutes.
MinJobAge=600
DefMemPerCPU=500
GresTypes=gpu
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
{node} NodeAddr=127.0.0.1 Gres=gpu:2 State=UNKNOWN
PartitionName=cpu Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=ALL MaxTime=INFINITE State=UP
"""


def unavailable_reason() -> str | None:
    """Why no cluster can be started here, or None."""
    if os.name != "posix" or os.geteuid() != 0:
        return "starting SLURM daemons needs root"
    if not all(shutil.which(c) for c in COMMANDS) and not shutil.which("apt-get"):
        return "SLURM is not installed and there is no apt-get to install it"
    return None


def install() -> None:
    """Install Debian's SLURM and munge unless every command is there already."""
    if all(shutil.which(c) for c in COMMANDS):
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # Wait for another apt run rather than fail on its lock.
    install = ["apt-get", "install", "-y", "-q", "-o", "DPkg::Lock::Timeout=600", *PACKAGES]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=True)
        result = subprocess.run(install, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"apt-get install {' '.join(PACKAGES)} failed:\n{result.stderr}")


def stop_daemons(root: Path = SCRATCH) -> None:
    """Stop the daemons whose pid files lie in ``root``, if those pids still run them."""
    for name in DAEMONS:
        pid_file = root / f"{name}.pid"
        if not pid_file.exists():
            continue
        pid = int(pid_file.read_text().split()[0])
        comm = Path(f"/proc/{pid}/comm")
        if comm.exists() and comm.read_text().strip() == name:
            os.kill(pid, signal.SIGTERM)
            _wait(lambda pid=pid: not Path(f"/proc/{pid}").exists(), f"{name} to stop", 30)
        pid_file.unlink(missing_ok=True)


@contextmanager
def local_cluster(root: Path = SCRATCH):
    """Start the cluster, yield the environment to run its clients in, stop it."""
    install()
    stop_daemons(root)
    shutil.rmtree(root, ignore_errors=True)  # fresh state: no jobs or settings of a past run
    for folder in ("state", "spool"):
        (root / folder).mkdir(parents=True)
    node = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True)
    node_line = node.stdout.splitlines()[0]  # NodeName=<host> CPUs=... RealMemory=...
    node_name = node_line.split()[0].removeprefix("NodeName=")
    configs = {
        "slurm.conf": SLURM_CONF.format(
            root=root, node=node_line, controller_port=CONTROLLER_PORT, node_port=NODE_PORT
        ),
        # Without File= the node goes INVAL; /dev/null and /dev/zero stand in for two GPUs.
        "gres.conf": (
            f"AutoDetect=off\nNodeName={node_name} Name=gpu File=/dev/null,/dev/zero Count=2\n"
        ),
    }
    key = root / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    env = {name: value for name, value in os.environ.items() if name != "SLURM_CONF"}
    try:
        for name, text in configs.items():
            if (ETC / name).exists() and not _ours(ETC / name):
                raise RuntimeError(f"{ETC / name} belongs to another SLURM setup; not replacing it")
            ETC.mkdir(exist_ok=True)
            (ETC / name).write_text(MARK + text)
        _run(
            ["munged", "--force", f"--key-file={key}", f"--socket={root}/munge.socket",
             f"--pid-file={root}/munged.pid", f"--log-file={root}/munged.log",
             f"--seed-file={root}/munged.seed"],
            env,
        )  # fmt: skip
        _run(["slurmctld"], env)
        _run(["slurmd"], env)
        _wait(lambda: _node_state(env) in ("idle", "mix", "alloc"), "the node to be idle", 60)
        yield env
    finally:
        stop_daemons(root)
        for name in configs:
            if _ours(ETC / name):
                (ETC / name).unlink()


def _ours(path: Path) -> bool:
    return path.exists() and path.read_text().startswith(MARK)


def _run(command: list[str], env: dict[str, str]) -> None:
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"{command[0]} failed to start:\n{result.stdout}{result.stderr}")


def _node_state(env: dict[str, str]) -> str:
    result = subprocess.run(
        ["sinfo", "-h", "-N", "-o", "%t"], env=env, capture_output=True, text=True, timeout=30
    )
    return result.stdout.split()[0].rstrip("*~#") if result.stdout.split() else ""


def _wait(condition, what: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {seconds:.0f} s waiting for {what}")
        time.sleep(0.5)


def jobs(env: dict[str, str]) -> list[dict[str, str]]:
    """Every job the controller knows (finished ones for MinJobAge), as scontrol's key=value."""
    result = subprocess.run(
        ["scontrol", "show", "job", "--oneliner"], env=env, capture_output=True, text=True,
        timeout=30, check=True,
    )  # fmt: skip
    return [
        dict(field.split("=", 1) for field in line.split() if "=" in field)
        for line in result.stdout.splitlines()
        if line.startswith("JobId=")
    ]
