#!/usr/bin/env bash
# slurm_up.sh: bring up a one-node Slurm cluster (munged + slurmctld + slurmd) from Debian packages, without
# systemd, as root, for the Slurm integration tests (`make test-slurm`). The recipe and the measurements behind
# each setting are in docs/notes/slurm_single_node.md. Idempotent: re-running while up is a quick no-op.
# No slurmdbd: a `sacct` stand-in answers from slurmctld's job table (`squeue -t all`, kept for a day).
# Every wait is bounded. Knobs: SLURM_CI_DIR (state/logs, default /tmp/slurmci), SLURM_CI_CPUS (CPUs to
# advertise, default nproc).
set -euo pipefail
D=${SLURM_CI_DIR:-/tmp/slurmci}
H=$(hostname -s)
NPROC=$(nproc)
NCPU=${SLURM_CI_CPUS:-$NPROC}
MEM=$(( $(awk '/MemTotal/{print int($2/1024)}' /proc/meminfo) - 1024 ))   # MiB, 1 GiB headroom
log() { echo "[slurm_up ${SECONDS}s] $*"; }

pkgs="munge slurmctld slurmd slurm-client"
if ! dpkg -s $pkgs >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  timeout 300 apt-get update -qq
  # --no-install-recommends: 8 packages instead of the 43 of slurm-wlm. The image's policy-rc.d keeps the
  # package scripts from starting any daemon: they are started by hand below.
  timeout 300 apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
fi
log "packages ok"
mkdir -p "$D"/state/ctld "$D"/state/d "$D"/log "$D"/run "$D"/bin

# munge: the key comes from the package; /run/munge is not made without systemd.
[ -s /etc/munge/munge.key ] || mungekey --create --keyfile=/etc/munge/munge.key
chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
mkdir -p /run/munge && chown munge:munge /run/munge && chmod 755 /run/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
fi
munge -n | unmunge >/dev/null
log "munged up"

OVERRIDE=""; [ "$NCPU" -gt "$NPROC" ] && OVERRIDE="SlurmdParameters=config_overrides"
cat > /etc/slurm/slurm.conf <<CONF
# one-node CI cluster, written by tests/slurm/slurm_up.sh
ClusterName=ci
SlurmctldHost=$H(127.0.0.1)
AuthType=auth/munge
CredType=cred/munge
# cred_expire is also how long a requeued job waits before it may start again (default 120 s)
AuthInfo=cred_expire=10
SlurmUser=root
SlurmdUser=root
$OVERRIDE
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$D/state/ctld
SlurmdSpoolDir=$D/state/d
SlurmctldPidFile=$D/run/slurmctld.pid
SlurmdPidFile=$D/run/slurmd.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
# the defaults (bf_interval=30, sched_interval=60) would keep a requeued job waiting up to 30 s more
SchedulerParameters=bf_interval=1,sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# without it a job with no --mem takes the whole node's memory, and jobs run one at a time
DefMemPerCPU=1024
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
InactiveLimit=0
KillWait=5
# keep finished jobs in slurmctld's table for a day: the sacct stand-in reads them from squeue
MinJobAge=86400
SlurmctldTimeout=30
SlurmdTimeout=60
Waittime=0
NodeName=$H NodeAddr=127.0.0.1 CPUs=$NCPU RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$H Default=YES MaxTime=INFINITE State=UP
CONF

# sacct stand-in: answers `sacct ... -j ID[,ID] ...` (JobID|State|NodeList) from squeue -t all.
cat > "$D/bin/sacct" <<'SHIM'
#!/bin/bash
ids=()
while [ $# -gt 0 ]; do
  case "$1" in
    -j|--jobs) IFS=, read -ra more <<<"$2"; ids+=("${more[@]}"); shift 2 ;;
    -j*) IFS=, read -ra more <<<"${1#-j}"; ids+=("${more[@]}"); shift ;;
    --jobs=*) IFS=, read -ra more <<<"${1#--jobs=}"; ids+=("${more[@]}"); shift ;;
    -o|--format) shift 2 ;;
    *) shift ;;
  esac
done
echo "JobID|State|NodeList"
squeue -h -t all -o '%i|%F|%T|%N' | awk -F'|' -v want="${ids[*]}" '
  BEGIN { n = split(want, w, " "); for (k = 1; k <= n; k++) keep[w[k]] = 1 }
  { base = $1; sub(/_.*/, "", base)
    if (n == 0 || ($1 in keep) || (base in keep) || ($2 in keep)) print $1 "|" $3 "|" $4 }'
SHIM
chmod +x "$D/bin/sacct"

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
alive "$D/run/slurmctld.pid" || /usr/sbin/slurmctld
alive "$D/run/slurmd.pid" || /usr/sbin/slurmd
state=""
for _ in $(seq 300); do
  state=$(timeout 5 sinfo -h -n "$H" -o '%T' 2>/dev/null || true)
  case "$state" in idle*|mixed*|allocated*) break ;; esac
  sleep 0.2
done
case "$state" in idle*|mixed*|allocated*) ;;
  *) echo "slurm_up: node state '$state' after 60 s" >&2; timeout 5 sinfo -R >&2 || true
     tail -20 "$D/log/slurmctld.log" "$D/log/slurmd.log" >&2; exit 1 ;;
esac
cat > "$D/env.sh" <<ENV
# source me: puts the sacct stand-in first on PATH
export PATH=$D/bin:\$PATH
export SLURM_CI_DIR=$D
ENV
log "cluster up: node $H $state, $NCPU CPUs; source $D/env.sh"
