# Shell functions the project's scripts share; sourced, not run.

say() { printf '… %s\n' "$*" >&2; }

# The first Debian archive apt is configured with (deb822 `URIs:` or one-line `deb` entries), security excluded.
debian_mirror() {
  grep -hsE '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list \
    | tr ' ' '\n' | grep -E '^https?://' | grep -v security | head -1 || true  # head may stop grep early
}

# apt_install LOG PACKAGE...: Debian packages the host lacks, installed as root without starting any service they
# bring (a policy-rc.d that exits 101; one the host already has is left as it is).
apt_install() {
  local log=$1 missing=() pkg; shift
  for pkg in "$@"; do dpkg-query -W -f '${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg"); done
  [ ${#missing[@]} = 0 ] && return
  [ "$(id -u)" = 0 ] || { echo "error: missing Debian packages: ${missing[*]} (sudo apt-get install them)" >&2; exit 2; }
  say "installing Debian's ${missing[*]}"
  mkdir -p "$(dirname "$log")"
  local policy=/usr/sbin/policy-rc.d ours="" status=0 wait=(-o DPkg::Lock::Timeout=600)
  # One install at a time from the project's scripts (run side by side, the second found apt's lists locked);
  # DPkg::Lock::Timeout waits for any other apt on the host.
  exec 9>/run/lock/kiln-apt.lock
  flock -w 900 9 || { echo "error: another install of the project's held /run/lock/kiln-apt.lock for 15 min" >&2; exit 2; }
  if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && ours=1; fi
  { apt-get "${wait[@]}" update -q &&
    DEBIAN_FRONTEND=noninteractive apt-get "${wait[@]}" install -y -q --no-install-recommends "${missing[@]}"; } \
    >"$log" 2>&1 || status=$?
  [ -z "$ours" ] || rm -f "$policy"
  exec 9>&-
  [ "$status" = 0 ] || { echo "error: apt-get install failed; log: $log" >&2; exit 2; }
}

# stop_pid PID [SECONDS]: TERM, then KILL if it is still there after SECONDS (default 10).
stop_pid() {
  kill -0 "$1" 2>/dev/null || return 0
  kill -TERM "$1"
  for _ in $(seq 1 $((${2:-10} * 4))); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.25; done
  kill -KILL "$1" 2>/dev/null || true
}
