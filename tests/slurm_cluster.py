"""A single-node Slurm (Debian's slurm-wlm 22.05) brought up for a test and torn down after it:
munged with its own socket/pid/log/seed files, slurmctld and slurmd in the foreground as child
processes, stopped by PID in reverse order. No systemd.

The configuration is also written to /etc/slurm/slurm.conf (the previous file, if any, is put
back afterwards): the Snakemake slurm plugin's job step strips every SLURM_* variable, SLURM_CONF
included, before its nested srun, which then reads the default path."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import debian

DEFAULT_CONF = Path("/etc/slurm/slurm.conf")
BINARIES = ("munged", "slurmctld", "slurmd", "sinfo", "squeue", "sbatch", "srun", "scontrol")


PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")  # Debian's


def missing_binaries() -> list[str]:
    return debian.missing(BINARIES)


def install() -> str | None:
    """Installs Debian's Slurm packages when they are missing. None when Slurm is there, else
    why it cannot be installed on this machine (not root, no apt-get)."""
    return debian.ensure(PACKAGES, BINARIES)


def _exe(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def write_conf(d: Path, cpus: int, mem_mb: int, spool: Path | None = None) -> Path:
    spool = spool or d / "spool"
    (spool / "d").mkdir(parents=True, exist_ok=True)
    (spool / "ctld").mkdir(parents=True, exist_ok=True)
    conf = d / "slurm.conf"
    # explicit topology: hwloc's detection fails in these VMs
    node = (f"NodeName=localhost CPUs={cpus} SocketsPerBoard=1 CoresPerSocket={cpus} "
            f"ThreadsPerCore=1 RealMemory={mem_mb} State=UNKNOWN")
    conf.write_text(f"""ClusterName=quantsweep-test
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket={d / 'munge.socket'}
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
MinJobAge=600
ReturnToService=2
SlurmctldPidFile={d / 'slurmctld.pid'}
SlurmdPidFile={d / 'slurmd.pid'}
SlurmdSpoolDir={spool / 'd'}
StateSaveLocation={spool / 'ctld'}
SlurmctldLogFile={d / 'slurmctld.log'}
SlurmdLogFile={d / 'slurmd.log'}
SlurmctldPort=6817
SlurmdPort=6818
{node}
PartitionName=main Nodes=localhost Default=YES MaxTime=INFINITE State=UP
""")
    return conf


@contextmanager
def single_node(d: Path, cpus: int | None = None, mem_mb: int = 8000) -> Iterator[dict[str, str]]:
    """Yields the environment (SLURM_CONF) under which sbatch/squeue reach the cluster."""
    d.mkdir(parents=True, exist_ok=True)
    cpus = cpus or os.cpu_count() or 1
    # slurmstepd's Unix sockets live in the spool: their paths must stay under 108 bytes,
    # which a pytest-xdist worker's tmp_path can pass
    spool = Path(tempfile.mkdtemp(prefix="qs-slurm-", dir="/tmp"))
    conf = write_conf(d, cpus, mem_mb, spool)
    saved = DEFAULT_CONF.read_bytes() if DEFAULT_CONF.exists() else None
    DEFAULT_CONF.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(conf, DEFAULT_CONF)
    env = {**os.environ, "SLURM_CONF": str(conf)}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        key = d / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        subprocess.run([_exe("munged"), "--force", f"--key-file={key}", f"--socket={d / 'munge.socket'}",
                        f"--pid-file={d / 'munged.pid'}", f"--log-file={d / 'munged.log'}",
                        f"--seed-file={d / 'munged.seed'}"], check=True)
        procs.append(subprocess.Popen([_exe("slurmctld"), "-D", "-i", "-f", str(conf)], env=env,
                                      stdout=open(d / "slurmctld.out", "wb"), stderr=subprocess.STDOUT))
        time.sleep(0.5)
        procs.append(subprocess.Popen([_exe("slurmd"), "-D", "-N", "localhost", "-f", str(conf)],
                                      env=env, stdout=open(d / "slurmd.out", "wb"),
                                      stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            r = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True)
            if r.returncode == 0 and r.stdout.strip() == "idle":
                break
            time.sleep(0.5)
        else:
            logs = "\n".join((d / f).read_text(errors="replace")[-1500:]
                             for f in ("slurmctld.out", "slurmd.out") if (d / f).exists())
            raise RuntimeError(f"single-node Slurm did not become idle in 30 s:\n{logs}")
        yield env
    finally:
        for p in reversed(procs):  # slurmd, then slurmctld
            p.terminate()
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        pid = d / "munged.pid"
        if pid.exists():
            try:
                n = int(pid.read_text().strip())
                os.kill(n, 15)
                for _ in range(50):
                    os.kill(n, 0)
                    time.sleep(0.1)
            except (ProcessLookupError, ValueError):
                pass
        shutil.rmtree(spool, ignore_errors=True)
        if saved is None:
            DEFAULT_CONF.unlink(missing_ok=True)
        else:
            DEFAULT_CONF.write_bytes(saved)
