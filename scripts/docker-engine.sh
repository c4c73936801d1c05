#!/usr/bin/env bash
# A Docker engine for Kiln's image builds and container runs, started only when none answers.
#   scripts/docker-engine.sh up      # start one if `docker info` fails; prints "started" or "running"
#   scripts/docker-engine.sh down    # stop the engine `up` started (one it found running is left alone)
#   scripts/docker-engine.sh status  # exit 0 while an engine answers
#   scripts/docker-engine.sh run CMD...  # up, CMD, then down if up started it (whatever CMD's outcome)
# The engine it starts changes nothing on the host's network: no firewall rules (--iptables=false), no forwarding
# or masquerading, and no bridge (--bridge=none): containers and builds use the host's network, on loopback.
# Debian's docker.io is installed when dockerd is missing (as root; it runs nothing by itself without systemd).
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

STATE=${KILN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kiln}/docker
PIDFILE=$STATE/dockerd.pid
LOG=$STATE/dockerd.log

answers() { timeout 10 docker info >/dev/null 2>&1; }

ensure_installed() {
  command -v dockerd >/dev/null && return
  [ "$(id -u)" = 0 ] || { echo "error: no Docker engine answers and dockerd is not installed (sudo apt-get install docker.io)" >&2; exit 2; }
  apt_install "$STATE/install.log" docker.io
}

up() {
  if answers; then echo "running"; return; fi
  mkdir -p "$STATE"
  ensure_installed
  local before_forward
  before_forward=$(cat /proc/sys/net/ipv4/ip_forward)
  # setsid: its own session, so a Ctrl-C meant for the command `run` wraps does not reach the engine.
  setsid dockerd --iptables=false --ip-forward=false --ip-masq=false --bridge=none \
    --exec-opt native.cgroupdriver=cgroupfs --pidfile "$PIDFILE.engine" >"$LOG" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  for _ in $(seq 1 120); do
    if answers; then
      [ "$(cat /proc/sys/net/ipv4/ip_forward)" = "$before_forward" ] || {
        echo "error: the engine changed net.ipv4.ip_forward; stopping it" >&2; down; exit 2; }
      echo "started"
      return
    fi
    kill -0 "$(cat "$PIDFILE")" 2>/dev/null || { echo "error: dockerd exited; its log ($LOG) ends:" >&2; tail -20 "$LOG" >&2; rm -f "$PIDFILE"; exit 2; }
    sleep 0.5
  done
  echo "error: dockerd did not answer within 60 s; log: $LOG" >&2
  down
  exit 2
}

down() {
  [ -f "$PIDFILE" ] || { echo "not started here"; return; }
  stop_pid "$(cat "$PIDFILE")" 30
  rm -f "$PIDFILE" "$PIDFILE.engine"
  # dockerd leaves its default network namespace mounted: unmounted, the host's mounts are as they were.
  awk '$2 ~ "^/run/docker/netns/" {print $2}' /proc/mounts | while read -r mnt; do umount "$mnt"; done
  echo "stopped"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) answers ;;
  run)
    shift
    started=$(up | tail -1)
    if [ "$started" = started ]; then trap 'down >/dev/null; exit 130' INT TERM; fi  # interrupted: stopped all the same
    status=0
    "$@" || status=$?
    if [ "$started" = started ]; then down >/dev/null; fi
    exit "$status"
    ;;
  *) echo "usage: $0 up|down|status|run CMD..." >&2; exit 1 ;;
esac
