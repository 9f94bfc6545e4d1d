#!/usr/bin/env bash
# Start a single-node SLURM cluster on this machine, without systemd: munged, slurmctld and slurmd
# as background daemons, this host as controller and only compute node, one fake GPU declared as a
# gres backed by /dev/null (so `--gpus=1` / `--gres=gpu:1` requests are scheduled and visible in
# `scontrol show job`, while the jobs themselves run on the CPU). No accounting database: `sacct`
# does not work, so the workflow's test profile queries job states with `squeue`; MinJobAge is
# raised so finished jobs stay visible to squeue long enough.
#
# Idempotent: if the node is already up, it only checks it. Needs root. Writes /etc/slurm/*.conf.
# Check afterwards with: sinfo; srun hostname; sbatch --gres=gpu:1 --wrap hostname
set -euo pipefail

if [ "$(id -u)" != 0 ]; then echo "slurm: start.sh needs root" >&2; exit 1; fi
for tool in munged slurmctld slurmd sinfo; do
    command -v "$tool" >/dev/null || { echo "slurm: $tool not installed (run .ci/slurm/install.sh)" >&2; exit 1; }
done

HOST=$(hostname -s)
CPUS=$(nproc)
MEM_MB=$(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo)
REAL_MB=$(( MEM_MB > 4096 ? MEM_MB - 2048 : MEM_MB * 3 / 4 ))
# the hardware's own topology (CPUs, sockets, cores, threads), as slurmd reports it
TOPOLOGY=$(slurmd -C 2>/dev/null | head -1 | grep -o 'CPUs=[0-9]* .*ThreadsPerCore=[0-9]*' || echo "CPUs=$CPUS")
SLURM_DIR=/etc/slurm
LOG_DIR=/var/log/slurm
mkdir -p "$SLURM_DIR" "$LOG_DIR" /var/spool/slurmctld /var/spool/slurmd /run/munge /var/lib/munge /var/log/munge

node_ready() {
    local state
    state=$(sinfo -h -N -n "$HOST" -o %T 2>/dev/null | head -1) || return 1
    [[ "$state" == idle* || "$state" == mixed* || "$state" == alloc* ]]
}

if pgrep -x slurmctld >/dev/null && pgrep -x slurmd >/dev/null && node_ready; then
    echo "slurm: already running"; sinfo; exit 0
fi

# --- munge: authentication between the SLURM commands and daemons
if [ ! -s /etc/munge/munge.key ]; then
    if command -v mungekey >/dev/null; then mungekey --create --force; else
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none; fi
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
chmod 0700 /etc/munge; chmod 0400 /etc/munge/munge.key
if ! pgrep -x munged >/dev/null; then
    if id munge >/dev/null 2>&1; then runuser -u munge -- munged; else munged --force; fi
fi
for _ in $(seq 50); do munge -n </dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
munge -n </dev/null | unmunge >/dev/null || { echo "slurm: munge does not work" >&2; exit 1; }

# --- configuration: this host is controller and compute node, with one fake GPU
cat > "$SLURM_DIR/slurm.conf" <<CONF
ClusterName=ci
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
GresTypes=gpu
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
MinJobAge=900
SchedulerParameters=sched_interval=2
SlurmdParameters=config_overrides
DefMemPerCPU=1000
NodeName=$HOST $TOPOLOGY RealMemory=$REAL_MB Gres=gpu:1 State=UNKNOWN
PartitionName=main Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
cat > "$SLURM_DIR/gres.conf" <<CONF
NodeName=$HOST Name=gpu File=/dev/null
CONF

# --- daemons (they fork into the background themselves)
pgrep -x slurmctld >/dev/null || slurmctld -c -i
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 60); do node_ready && break; sleep 0.5; done
if ! node_ready; then
    scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true
    sleep 2
fi
if ! node_ready; then
    echo "slurm: node $HOST did not come up; logs follow" >&2
    sinfo -N -l >&2 || true
    tail -n 30 "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log" >&2 || true
    exit 1
fi
sinfo
echo "slurm: up on $HOST ($CPUS CPUs, $REAL_MB MB, 1 fake GPU)"
