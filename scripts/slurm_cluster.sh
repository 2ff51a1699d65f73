#!/usr/bin/env bash
# slurm_cluster.sh - a throw-away, single-node SLURM cluster on this machine, for the SLURM
# tests (tests/test_slurm.py) and `benchmarks/workflow_overhead.py --slurm`.
#
#   bash scripts/slurm_cluster.sh up       install what is missing, start the cluster, smoke-test it
#   bash scripts/slurm_cluster.sh status   what runs; exit 0 only if the cluster takes jobs
#   bash scripts/slurm_cluster.sh down     cancel all jobs, stop every daemon `up` started
#
# Needs root and a Debian-like system with apt-get (tested on Debian 12: slurm-wlm 22.05,
# munge 0.5.15, MariaDB 10.11). No systemd, no cgroups, no containers: every daemon is
# started by hand and remembered by a PID file, so `down` stops exactly what `up` started.
# Both are idempotent: `up` on a running cluster only checks it, `down` on a stopped one
# does nothing.
#
# The cluster: node "localhost" with this machine's CPUs and 95 % of its memory, partition
# "debug" (the default partition of slurm/config.yaml) without a time limit, accounting
# through slurmdbd + MariaDB so that `sacct` works (the tests read job states from it).
#
# Environment:
#   LAYERNAS_SLURM_DIR        state, PID files and logs (default /tmp/layernas-slurm)
#   LAYERNAS_SLURM_OVERWRITE  1 = replace a slurm.conf / slurmdbd.conf this script did not
#                             write (default: refuse, it may belong to a real cluster)
set -euo pipefail

BASE=${LAYERNAS_SLURM_DIR:-/tmp/layernas-slurm}
ST=$BASE/state          # PID files + slurmctld/slurmd spool
LOG=$BASE/log           # every daemon's log, the apt log, the smoke job's output
ETC=/etc/slurm          # where the SLURM commands (sacct, squeue, ...) look without SLURM_CONF
MARK="# Written by layernas scripts/slurm_cluster.sh; replaced on every 'up'."
CLUSTER=layernas
DB_PASS=layernas-local  # MariaDB only listens on 127.0.0.1; the password guards nothing else
PACKAGES="munge mariadb-server slurmdbd slurmctld slurmd slurm-client"

# Our commands must talk to our cluster even when the caller points SLURM_CONF elsewhere
# (the test suite points it at a dummy file for its local tests).
export SLURM_CONF=$ETC/slurm.conf
export DEBIAN_FRONTEND=noninteractive
T0=$(date +%s.%N)

say() { echo "--- $*"; }
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f s", b-a}'; }

# wait_for SECONDS CMD...: poll CMD every 0.5 s (daemons report ready only by answering)
wait_for() {
  local n=$(( $1 * 2 )); shift
  for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  echo "timed out waiting for: $*" >&2
  return 1
}

# running PID: the process exists and is not a zombie (the daemons are children of PID 1,
# which in a container may reap them only seconds after they exit)
running() { [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }

# alive PIDFILE NAME: the PID in PIDFILE runs and is NAME (a stale file's PID may have been
# reused by an unrelated process, which must never be killed)
alive() {
  local p
  [ -s "$1" ] || return 1
  p=$(cat "$1")
  [ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$2" ] && running "$p"
}

# stop PIDFILE NAME: SIGTERM, up to 15 s to exit, then SIGKILL; the file goes either way
stop() {
  local f=$ST/$1.pid p
  if alive "$f" "$2"; then
    p=$(cat "$f")
    kill "$p" 2>/dev/null || true
    for _ in $(seq 75); do running "$p" || break; sleep 0.2; done
    running "$p" && kill -9 "$p" 2>/dev/null || true
    echo "stopped $2 ($p)"
  fi
  rm -f "$f"
}

# own_file PATH: PATH is absent or was written by this script (else refuse to replace it)
own_file() {
  [ ! -e "$1" ] || [ "$(head -1 "$1")" = "$MARK" ] || [ "${LAYERNAS_SLURM_OVERWRITE:-0}" = 1 ] || {
    echo "$1 exists and was not written by this script (a real cluster's?);" \
         "set LAYERNAS_SLURM_OVERWRITE=1 to replace it" >&2
    exit 1
  }
}

controller_up() { alive "$ST/slurmctld.pid" slurmctld && scontrol ping 2>/dev/null | grep -q UP; }
node_ready() { sinfo -h -N -o %t 2>/dev/null | grep -qxE 'idle|mix|alloc'; }
accounting_up() { sacctmgr -n list cluster format=cluster 2>/dev/null | grep -qw "$CLUSTER"; }
healthy() { controller_up && alive "$ST/slurmd.pid" slurmd && node_ready && accounting_up; }

install_packages() {
  local missing="" p
  for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
  done
  [ -z "$missing" ] && return 0
  command -v apt-get >/dev/null || { echo "missing packages:$missing, and no apt-get to install them" >&2; exit 1; }
  say "installing:$missing"
  # The packages' maintainer scripts would start munge, MariaDB and SLURM with their stock
  # configuration (which does not fit this cluster, and would outlive `down`): a policy-rc.d
  # that denies every start keeps them off while we install. Only ours is removed afterwards.
  local policy=/usr/sbin/policy-rc.d ours=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod 755 "$policy"; ours=1
  fi
  # An index that is too old names package versions the mirror no longer has: refresh it once.
  { apt-get update -q && apt-get install -y -q --no-install-recommends $missing; } >"$LOG/apt.log" 2>&1 \
    || { [ "$ours" = 1 ] && rm -f "$policy"; tail -30 "$LOG/apt.log" >&2; exit 1; }
  [ "$ours" = 1 ] && rm -f "$policy"
  # On a systemd machine, units may have been started anyway (policy-rc.d present but permissive).
  if [ -d /run/systemd/system ]; then systemctl stop slurmd slurmctld slurmdbd 2>/dev/null || true; fi
}

start_munge() {
  # Every SLURM message is signed by munge; all daemons on one host share the key.
  [ -s /etc/munge/munge.key ] || mungekey --create --keyfile=/etc/munge/munge.key
  chown munge:munge /etc/munge/munge.key
  chmod 0400 /etc/munge/munge.key
  install -d -o munge -g munge -m 0755 /run/munge        # systemd's RuntimeDirectory, by hand
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    return 0                                              # a munged already answers: use it
  fi
  # munged refuses to run as root; it daemonizes and writes its PID to /run/munge.
  runuser -u munge -- /usr/sbin/munged </dev/null >>"$LOG/munged.out" 2>&1 9>&-
  wait_for 10 sh -c 'munge -n | unmunge'
  cp /run/munge/munged.pid "$ST/munged.pid"              # remember only a munged we started
  say "munged started"
}

start_mariadb() {
  install -d -o mysql -g mysql -m 0755 /run/mysqld       # socket + PID directory
  [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql >"$LOG/mariadb-install.log" 2>&1
  if ! mariadb-admin ping >/dev/null 2>&1; then
    # Not daemonized by itself: detach it, and give it no descriptor of ours (a caller that
    # captures our output would otherwise wait for MariaDB to exit).
    setsid /usr/sbin/mariadbd --user=mysql --bind-address=127.0.0.1 --pid-file=/run/mysqld/mysqld.pid \
      </dev/null >"$LOG/mariadb.log" 2>&1 9>&- &
    wait_for 60 mariadb-admin ping || { tail -20 "$LOG/mariadb.log" >&2; exit 1; }
    cp /run/mysqld/mysqld.pid "$ST/mariadb.pid"            # remember only a server we started
    say "mariadbd started"
  fi
  # root logs in through the unix socket; slurmdbd gets its own user on its own database.
  mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
}

write_slurm_conf() {
  # The node line describes the real hardware as slurmd sees it (`slurmd -C`), renamed to
  # "localhost". CPUs are capped at what this process may use (a container's cpuset), memory
  # at a cgroup limit, then 5 % is kept back: slurmd marks a node invalid whose configured
  # memory exceeds what it finds.
  local hw cpus sockets cores threads mem limit n node
  hw=$(/usr/sbin/slurmd -C | head -1)
  field() { sed -n "s/.* $1=\([0-9]*\).*/\1/p" <<<"$hw"; }
  cpus=$(field CPUs); sockets=$(field SocketsPerBoard); cores=$(field CoresPerSocket)
  threads=$(field ThreadsPerCore); mem=$(field RealMemory)
  for limit in /sys/fs/cgroup/memory.max /sys/fs/cgroup/memory/memory.limit_in_bytes; do
    if [ -r "$limit" ] && [ "$(cat "$limit")" != max ]; then
      n=$(( $(cat "$limit") / 1048576 )); [ "$n" -lt "$mem" ] && mem=$n
    fi
  done
  mem=$(( mem * 95 / 100 ))
  n=$(nproc)
  if [ "$n" -lt "$cpus" ]; then
    node="CPUs=$n"
  else
    node="CPUs=$cpus SocketsPerBoard=$sockets CoresPerSocket=$cores ThreadsPerCore=$threads"
  fi
  own_file "$ETC/slurm.conf"
  mkdir -p "$ETC"
  cat >"$ETC/slurm.conf" <<EOF
$MARK
ClusterName=$CLUSTER
SlurmctldHost=localhost
# root runs every daemon: no slurm user, no file ownership to arrange
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$ST/ctld
SlurmdSpoolDir=$ST/d
SlurmctldPidFile=$ST/slurmctld.pid
SlurmdPidFile=$ST/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
# no cgroups here: track job processes through /proc, no CPU binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
# cores and memory are both consumable, so an oversized memory request is refused at sbatch
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
EnforcePartLimits=ALL
SchedulerType=sched/backfill
# a node that went down (e.g. slurmd restarted) comes back by itself once it registers
ReturnToService=2
MpiDefault=none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
JobCompType=jobcomp/filetxt
JobCompLoc=$LOG/jobcomp.txt
# finished jobs stay in squeue for 5 min: slurm/config.yaml's squeue status command needs
# to see a job's end state (it needs at least ~6 s)
MinJobAge=300
# a job over its time limit gets SIGTERM, then SIGKILL 5 s later (the default waits 30 s)
KillWait=5
NodeName=localhost NodeAddr=127.0.0.1 $node RealMemory=$mem State=UNKNOWN
# "debug" is slurm/config.yaml's default partition; jobs carry their own time limits
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
}

start_slurmdbd() {
  own_file "$ETC/slurmdbd.conf"
  cat >"$ETC/slurmdbd.conf" <<EOF
$MARK
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
LogFile=$LOG/slurmdbd.log
PidFile=$ST/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$ETC/slurmdbd.conf"                         # slurmdbd refuses a readable one (password)
  if ! alive "$ST/slurmdbd.pid" slurmdbd; then
    /usr/sbin/slurmdbd </dev/null >>"$LOG/slurmdbd.out" 2>&1 9>&-
    wait_for 30 sacctmgr -n list cluster || { tail -20 "$LOG/slurmdbd.log" >&2; exit 1; }
    say "slurmdbd started"
  fi
  # slurmctld only sends accounting for a cluster the database knows
  accounting_up || sacctmgr -i add cluster "$CLUSTER" >/dev/null
}

start_slurm() {
  if ! alive "$ST/slurmctld.pid" slurmctld; then
    # A fresh controller state: jobs of an earlier cluster died with its slurmd and would
    # only be requeued. (So job ids start again at 1, while the accounting database keeps
    # the earlier ones: tell jobs apart by name, not by id, in sacct.)
    rm -rf "$ST/ctld"; mkdir -p "$ST/ctld"
    /usr/sbin/slurmctld -i </dev/null >>"$LOG/slurmctld.out" 2>&1 9>&-
    wait_for 30 controller_up || { tail -20 "$LOG/slurmctld.log" >&2; exit 1; }
    say "slurmctld started"
  fi
  if ! alive "$ST/slurmd.pid" slurmd; then
    rm -rf "$ST/d"; mkdir -p "$ST/d"
    /usr/sbin/slurmd -N localhost </dev/null >>"$LOG/slurmd.out" 2>&1 9>&-
    say "slurmd started"
  fi
  wait_for 60 node_ready || { sinfo -N -l >&2 || true; tail -20 "$LOG/slurmd.log" >&2; exit 1; }
}

smoke_test() {
  # What the tests use: an interactive step, a batch job with a step inside, and the
  # accounting record of the batch job.
  srun -n1 -t 1 uname -n
  local jid
  jid=$(sbatch --parsable -t 1 -o "$LOG/smoke-%j.out" --wrap 'srun -n1 echo batch-ok')
  wait_for 60 sh -c "! squeue -h -j $jid -t PD,R,CG | grep -q ."   # sbatch --wait polls only every ~10 s
  grep -q batch-ok "$LOG/smoke-$jid.out"
  wait_for 30 sh -c "sacct -n -X -j $jid -o State | grep -q COMPLETED" \
    || { echo "sacct does not show job $jid as COMPLETED" >&2; exit 1; }
}

up() {
  [ "$(id -u)" = 0 ] || { echo "starting SLURM needs root" >&2; exit 1; }
  if healthy; then say "already up"; sinfo; return 0; fi
  install_packages
  start_munge
  start_mariadb
  write_slurm_conf                                       # sacctmgr reads it to find slurmdbd
  start_slurmdbd
  start_slurm
  smoke_test
  sinfo
  say "up in $(elapsed "$T0") (logs: $LOG)"
}

down() {
  # Cancel every job while the controller still answers (without one scancel retries for
  # ~20 s), and let slurmd kill their processes before it stops.
  if controller_up; then
    squeue -h -o %i | xargs -r scancel 2>/dev/null || true
    wait_for 20 sh -c '! squeue -h | grep -q .' || true
  fi
  stop slurmd slurmd
  stop slurmctld slurmctld
  stop slurmdbd slurmdbd
  stop mariadb mariadbd
  stop munged munged
  say "down in $(elapsed "$T0")"
}

status() {
  local name comm rc=0
  for name in munged:munged mariadb:mariadbd slurmdbd:slurmdbd slurmctld:slurmctld slurmd:slurmd; do
    comm=${name#*:}
    if alive "$ST/${name%%:*}.pid" "$comm"; then
      printf '%-10s running (pid %s)\n' "$comm" "$(cat "$ST/${name%%:*}.pid")"
    else
      printf '%-10s not started by this script\n' "$comm"
    fi
  done
  if healthy; then sinfo; echo "cluster up"; else echo "cluster down"; rc=3; fi
  return "$rc"
}

mkdir -p "$ST" "$LOG"
# One `up`/`down` at a time: two test sessions starting the cluster at once would start
# every daemon twice. (Each daemon is started with this descriptor closed, 9>&-: one that
# kept it would hold the lock for as long as it runs.)
exec 9>"$BASE/lock"
flock 9
case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
