# Shared paths and helpers for scripts/slurm-up and scripts/slurm-down (sourced, not run).
# shellcheck shell=bash disable=SC2034  # the variables are used by the scripts that source this
#
# The test cluster keeps its configuration where the client tools look by default
# (/etc/slurm), so sbatch/squeue/sacct work without SLURM_CONF in any shell.

CLUSTER_NAME=reconciler
ACCOUNT_NAME=reconciler
SLURM_ETC=/etc/slurm
SLURM_RUN=/run/slurm
SLURM_SPOOL=/var/spool/slurm-test
SLURM_LOG=/var/log/slurm-test
# A local-only test cluster: MariaDB listens on 127.0.0.1 only, so a fixed password is fine.
DB_NAME=slurm_acct_db
DB_USER=slurm
DB_PASS=slurm-test-only

# Each daemon and its pid file. The pid file is how we find (and later stop) exactly the
# process we started, never a broad name match.
declare -A PIDFILE=(
  [munged]=/run/munge/munged.pid
  [mysqld]=/run/mysqld/mysqld.pid
  [slurmdbd]=$SLURM_RUN/slurmdbd.pid
  [slurmctld]=$SLURM_RUN/slurmctld.pid
  [slurmd]=$SLURM_RUN/slurmd.pid
)
# Start order; slurm-down stops in reverse.
DAEMONS=(munged mysqld slurmdbd slurmctld slurmd)

log() { printf 'slurm: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Prints the pid of daemon $1 if it is alive and really that program, else fails.
daemon_pid() {
  local name=$1 file=${PIDFILE[$1]} pid comm
  [[ -r $file ]] || return 1
  pid=$(tr -dc '0-9' <"$file")
  [[ -n $pid ]] || return 1
  comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
  # /proc/PID/comm is cut at 15 characters; all our names are shorter. MariaDB's server
  # is called mariadbd on Debian 12 (mysqld on older releases).
  case $name:$comm in
    mysqld:mysqld | mysqld:mariadbd) ;;
    *) [[ $comm == "$name" ]] || return 1 ;;
  esac
  printf '%s\n' "$pid"
}

running() { daemon_pid "$1" >/dev/null; }

# wait_for DESCRIPTION SECONDS COMMAND...: poll every 0.2 s until COMMAND succeeds.
wait_for() {
  local what=$1 limit=$2 start=$SECONDS
  shift 2
  until "$@" >/dev/null 2>&1; do
    if (( SECONDS - start >= limit )); then
      die "timed out after ${limit}s waiting for $what (logs: $SLURM_LOG, /var/log/mysql)"
    fi
    sleep 0.2
  done
}

# True while pid $1 exists and is not a zombie (reparented daemons may linger unreaped).
alive() {
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $state && $state != Z ]]
}

# Stops daemon $1 by its pid file (TERM, then KILL after 30 s); a no-op when it is not running.
stop_daemon() {
  local name=$1 pid i
  pid=$(daemon_pid "$name") || return 0
  if [[ $name == mysqld ]]; then
    # A clean shutdown makes mysqld_safe exit too instead of restarting mysqld.
    mysqladmin --protocol=socket shutdown >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
  else
    kill -TERM "$pid" 2>/dev/null || true
  fi
  for ((i = 0; i < 150; i++)); do
    alive "$pid" || { log "stopped $name ($pid)"; return 0; }
    sleep 0.2
  done
  log "$name ($pid) did not stop within 30 s; sending KILL"
  kill -KILL "$pid" 2>/dev/null || true
}
