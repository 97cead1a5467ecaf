#!/usr/bin/env bash
# slurm_down.sh: stop what slurm_up.sh started, by PID file, each stop bounded (SIGKILL after 10 s).
D=${SLURM_CI_DIR:-/tmp/slurmci}
stop() {  # name pidfile
  local pid
  [ -s "$2" ] || return 0
  pid=$(cat "$2")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && { echo "$1 ($pid) still alive: SIGKILL"; kill -9 "$pid"; }
  fi
  echo "stopped $1 ($pid)"
}
command -v scancel >/dev/null && timeout 10 scancel --user="$(id -un)" 2>/dev/null || true
stop slurmd "$D/run/slurmd.pid"
stop slurmctld "$D/run/slurmctld.pid"
stop munged /run/munge/munged.pid
true
