#!/usr/bin/env bash
# Stop the single-node SLURM started by start.sh (by the daemons' pid files; munged by its own).
set -u
for pidfile in /run/slurmd.pid /run/slurmctld.pid; do
    [ -s "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null
done
[ -s /run/munge/munged.pid ] && kill "$(cat /run/munge/munged.pid)" 2>/dev/null
exit 0
