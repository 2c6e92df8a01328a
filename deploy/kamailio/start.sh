#!/usr/bin/env bash
# Start the DialGate reference Kamailio on loopback (registrar + outbound proxy that asks
# the DialGate SIP gate about every numeric INVITE).
#
#   deploy/kamailio/start.sh [--port 5060] [--gate 127.0.0.1:5070] [--gate2 HOST:PORT]
#                            [--run-dir DIR] [--static-redirect] [--foreground] [--debug N]
#
# --gate2            a second gate: both are asked through Kamailio's dispatcher
#                    (OPTIONS probing, failover on timeout/408/503, never on 603)
# --static-redirect  run as a trivial static redirect server (the benchmark anchor)
# --foreground       stay in the foreground, log to stderr (tests use this); otherwise
#                    Kamailio daemonizes and writes DIR/kamailio.pid
# Runtime files (pid, control sockets) go to a private directory, never /var/run.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
port=5060
gate="127.0.0.1:5070"
gate2=""
run_dir=""
foreground=0
static=0
debug=1
shm=64
while [ $# -gt 0 ]; do
  case "$1" in
    --port) port="$2"; shift 2 ;;
    --gate) gate="$2"; shift 2 ;;
    --gate2) gate2="$2"; shift 2 ;;
    --run-dir) run_dir="$2"; shift 2 ;;
    --foreground) foreground=1; shift ;;
    --static-redirect) static=1; shift ;;
    --debug) debug="$2"; shift 2 ;;
    --shm) shm="$2"; shift 2 ;;
    *) echo "unknown option: $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
case "$port" in ''|*[!0-9]*) echo "--port must be a number, got '$port'" >&2; exit 2 ;; esac
case "$gate" in *:*) ;; *) echo "--gate must be host:port, got '$gate'" >&2; exit 2 ;; esac
KAMAILIO="${KAMAILIO:-$(command -v kamailio || echo /usr/sbin/kamailio)}"
[ -x "$KAMAILIO" ] || { echo "kamailio is not installed (apt-get install kamailio)" >&2; exit 1; }
[ -n "$run_dir" ] || run_dir="$(mktemp -d -t dialgate-kamailio.XXXXXX)"
mkdir -p "$run_dir"

args=(-f "$here/kamailio.cfg" -Y "$run_dir" -w "$run_dir" -m "$shm" -M 8
      -l "udp:127.0.0.1:$port" -l "tcp:127.0.0.1:$port"
      -A "LISTEN_PORT=$port" -A "GATE_ADDR=\"$gate\"" -A "DBGLEVEL=$debug")
[ "$static" = 1 ] && args+=(-A STATIC_REDIRECT)
if [ -n "$gate2" ]; then
  case "$gate2" in *:*) ;; *) echo "--gate2 must be host:port, got '$gate2'" >&2; exit 2 ;; esac
  printf '1 sip:%s\n1 sip:%s\n' "$gate" "$gate2" > "$run_dir/dispatcher.list"
  args+=(-A WITH_DISPATCHER -A "DISPATCHER_LIST=\"$run_dir/dispatcher.list\"")
fi

"$KAMAILIO" -c "${args[@]}" >/dev/null 2>"$run_dir/check.log" || { cat "$run_dir/check.log" >&2; exit 1; }
if [ "$foreground" = 1 ]; then
  exec "$KAMAILIO" "${args[@]}" -DD -E
else
  "$KAMAILIO" "${args[@]}" -P "$run_dir/kamailio.pid"
  echo "kamailio started on 127.0.0.1:$port (udp+tcp), gate $gate, runtime $run_dir (pid $(cat "$run_dir/kamailio.pid" 2>/dev/null || echo '?'))"
fi
