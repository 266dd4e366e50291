#!/usr/bin/env bash
# perf/floor.sh — what the unavoidable parts of one relayed message cost in CPU on this machine, each measured with
# a minimal tool outside the gateway (issue 15: is 0.4 CPU ms per unsigned message reachable here?).
#
#   perf/floor.sh [--messages N] [--group G] [--no-install]
#
# The gateway's unsigned bench row (perf/bench.sh, 4 KiB, 20 sessions, one message per connection, plain relay port)
# has to do at least this for every message:
#   inbound    the SMTP session the load generator opens: smtp-sink's own CPU (a small C server that stores and
#              forwards nothing) while smtp-loadgen sends it the bench row's messages
#   outbound   one transaction on an already open connection: smtp-source's own CPU (C, -d keeps the connections; it
#              does not pipeline, the gateway's client does, so this part is a little high)
#   commit     the durable spool's system calls, from python3: pwrite of the message into a recycled file of the same
#              length, fdatasync, rename into the queue directory, one directory fsync per G messages (--group, 3: the
#              gateway's group commit), and the rename out of the queue at delivery
#   mac        the return-path HMAC in SoftHSM2 (SignBench's hmac.hsm; needs perf/SmtpGateway.SignBench built)
# The sum is a floor for the whole gateway: managed code, policy, logs and metrics all come on top of it.
#
# Output: a table, and perf/results/floor-<UTC timestamp>.json. BENCH_TMP (default /var/tmp) holds the work
# directory; it must not be tmpfs, or fsync is free.
set -euo pipefail

here="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)"
lib="$here/lib"
messages=10000 group=3 install=1
while (($#)); do
    case "$1" in
        --messages) messages="$2"; shift 2 ;;
        --group) group="$2"; shift 2 ;;
        --no-install) install=0; shift ;;
        *) echo "floor.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
[[ "$messages" =~ ^[1-9][0-9]*$ && "$group" =~ ^[1-9][0-9]*$ ]] || { echo "floor.sh: --messages and --group take whole numbers" >&2; exit 2; }

if ((install)) && { ! command -v smtp-sink >/dev/null || ! command -v smtp-source >/dev/null || ! command -v jq >/dev/null; }; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix jq python3 >/dev/null
fi
for tool in smtp-sink smtp-source jq python3; do
    command -v "$tool" >/dev/null || [[ -x "/usr/sbin/$tool" ]] || { echo "floor.sh: $tool missing (packages postfix, jq, python3)" >&2; exit 1; }
done
export PATH="$PATH:/usr/sbin"

loadgen="$here/SmtpGateway.LoadGen/bin/Release/net10.0/smtp-loadgen"
[[ -x "$loadgen" ]] || dotnet build "$here/SmtpGateway.LoadGen" -c Release -nologo -v quiet >/dev/null
signbench="$here/SmtpGateway.SignBench/bin/Release/net10.0/smtpgw-signbench.dll"

work="$(mktemp -d "${BENCH_TMP:-/var/tmp}/smtpgw-floor.XXXXXX")"
sink_pid=""
cleanup() { [[ -z "$sink_pid" ]] || kill "$sink_pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
say() { echo "[floor $(date +%H:%M:%S)] $*" >&2; }
fcalc() { awk "BEGIN { printf \"%.3f\", $* }"; }

start_sink() {
    local p i j
    for i in 1 2 3 4 5; do
        p=$((10000 + RANDOM % 22000))
        ss -Htan "sport = :$p" | grep -q . && continue
        smtp-sink -u nobody -h sink.floor -m 2048 "127.0.0.1:$p" 2048 >/dev/null 2>"$work/sink.err" &
        sink_pid=$!
        for ((j = 0; j < 50; j++)); do
            if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then sink_port=$p; return 0; fi
            sleep 0.1
        done
        kill "$sink_pid" 2>/dev/null || true
    done
    echo "floor.sh: smtp-sink did not start: $(cat "$work/sink.err")" >&2; exit 1
}
stop_sink() { kill "$sink_pid" 2>/dev/null || true; wait "$sink_pid" 2>/dev/null || true; sink_pid=""; }

# inbound: the sink's CPU for the bench row's client pattern.
start_sink
"$loadgen" run --port "$sink_port" --messages 1000 --connections 20 --size 4096 >/dev/null
c0=$("$lib/procstat.pl" cpu "$sink_pid"); x0=$("$lib/procstat.pl" ctxsw "$sink_pid")
say "inbound: smtp-loadgen → smtp-sink, $messages messages, 20 sessions, 1 per connection"
"$loadgen" run --port "$sink_port" --messages "$messages" --connections 20 --size 4096 >"$work/inbound.json"
c1=$("$lib/procstat.pl" cpu "$sink_pid"); x1=$("$lib/procstat.pl" ctxsw "$sink_pid")
acked=$(jq .count "$work/inbound.json")
inbound=$(fcalc "($c1 - $c0) * 1000 / $acked")
inbound_cs=$(fcalc "($x1 - $x0) / $acked")
stop_sink

# outbound: smtp-source's own CPU, connections kept (-d), 20 at once as the gateway's pool to one smarthost.
start_sink
say "outbound: smtp-source -d → smtp-sink, $messages messages over 20 kept connections"
/usr/bin/time -f '%U %S %w %c' -o "$work/source.time" smtp-source -d -s 20 -m "$messages" -l 4096 \
    -f sender@tenant-a.example -t rcpt@example.net "127.0.0.1:$sink_port" >"$work/source.out" 2>&1
outbound=$(awk -v n="$messages" '{ printf "%.3f", ($1 + $2) * 1000 / n }' "$work/source.time")
outbound_cs=$(awk -v n="$messages" '{ printf "%.3f", ($3 + $4) / n }' "$work/source.time")
stop_sink

# commit: the spool's system calls for one message, as the gateway makes them.
say "commit: pwrite + fdatasync + rename in, directory fsync per $group, rename out ($messages messages)"
read -r commit commit_cs < <(python3 - "$work/spool" "$messages" "$group" <<'EOF'
import os, resource, sys, time
root, n, group = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
tmp, queue = os.path.join(root, "tmp"), os.path.join(root, "queue")
os.makedirs(tmp); os.makedirs(queue)
data = b"x" * 4608
free = []
for i in range(64):  # recycled files at their old length: the gateway's steady state
    p = os.path.join(tmp, f"free.{i}")
    fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o600); os.pwrite(fd, data, 0); os.fsync(fd); os.close(fd)
    free.append(p)
qfd = os.open(queue, os.O_RDONLY | os.O_DIRECTORY)
os.fsync(qfd)
start = time.process_time()
ru = resource.getrusage(resource.RUSAGE_SELF)
for i in range(n):
    p = free[i % 64]
    fd = os.open(p, os.O_WRONLY)
    os.pwrite(fd, data, 0)
    os.fdatasync(fd)
    os.close(fd)
    q = os.path.join(queue, f"m{i}")
    os.rename(p, q)
    if i % group == group - 1:
        os.fsync(qfd)
    os.rename(q, p)  # delivered: back to the free list
end = resource.getrusage(resource.RUSAGE_SELF)
switches = end.ru_nvcsw + end.ru_nivcsw - ru.ru_nvcsw - ru.ru_nivcsw
print("%.3f %.3f" % ((time.process_time() - start) * 1000 / n, switches / n))
EOF
)

# mac: SoftHSM2's HMAC for the return path.
mac=null
if [[ -f "$signbench" ]]; then
    say "mac: SignBench hmac.hsm"
    mac=$(dotnet "$signbench" --only hmac.hsm --rounds 5 2>/dev/null | awk '$1 == "hmac.hsm" { printf "%.3f", $2 / 1000 }')
    [[ -n "$mac" ]] || mac=null
else
    say "mac: not measured ($signbench not built: dotnet build perf/SmtpGateway.SignBench -c Release)"
fi

macv=$mac; [[ "$mac" != null ]] || macv=0
total=$(fcalc "$inbound + $outbound + $commit + $macv")
stamp=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$here/results"
jq -n --argjson inbound "$inbound" --argjson outbound "$outbound" --argjson commit "$commit" --argjson mac "$mac" \
    --argjson inbound_cs "$inbound_cs" --argjson outbound_cs "$outbound_cs" --argjson commit_cs "$commit_cs" \
    --argjson total "$total" --argjson messages "$messages" --argjson group "$group" \
    --arg cpu "$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)" --arg cores "$(nproc)" --arg kernel "$(uname -r)" '
    {name: "floor", messages: $messages, group: $group, machine: {cpu: $cpu, cores: ($cores | tonumber), kernel: $kernel},
     cpu_ms_per_msg: {inbound_smtp_sink: $inbound, outbound_smtp_source_kept: $outbound, commit_syscalls: $commit,
                      verp_hmac_softhsm2: $mac, sum: $total},
     ctxsw_per_msg: {inbound_smtp_sink: $inbound_cs, outbound_smtp_source_kept: $outbound_cs, commit_syscalls: $commit_cs}}' >"$here/results/floor-$stamp.json"

printf '%-52s %-8s %s\n' "part (per message)" "CPU ms" "ctxsw" \
    "inbound: smtp-sink, the bench row's client" "$inbound" "$inbound_cs" \
    "outbound: smtp-source on kept connections" "$outbound" "$outbound_cs" \
    "commit: write, fdatasync, renames, dir fsync/$group" "$commit" "$commit_cs" \
    "return-path HMAC in SoftHSM2" "${mac/null/-}" "-" \
    "floor (sum)" "$total" ""
echo "results: perf/results/floor-$stamp.json"
