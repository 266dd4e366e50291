#!/usr/bin/env bash
# perf/floor.sh — what the parts of one relayed message cost in CPU on this machine, each measured with a small tool
# outside the gateway, in C and in .NET (issue 15: how much of 0.4 CPU ms per unsigned message is left for the
# gateway's own work?).
#
#   perf/floor.sh [--messages N] [--group G] [--no-install]      (as root: smtp-sink drops to the user nobody)
#
# The gateway's unsigned bench row (perf/bench.sh: 4 KiB, 20 sessions, one message per connection, plain relay port)
# does at least this for every message:
#   inbound    the SMTP session the load generator opens. C: smtp-sink's own CPU (stores and forwards nothing) while
#              smtp-loadgen sends it the bench row's messages. .NET: the same for `smtp-loadgen sink`, the smallest
#              async .NET server that takes them (one async loop per connection over a PipeReader, as the gateway's
#              listener) — the difference is what the runtime's socket engine and thread pool add.
#   outbound   one transaction on an already open connection. C: smtp-source -d's own CPU. .NET: smtp-loadgen's own
#              CPU with --per-conn 1000 (client_cpu_s of a run of 3N less a run of N: no start-up). Neither pipelines;
#              the gateway's client does, so this part is a little high.
#   The .NET tools run with the gateway's runtime settings. Two .NET processes each pay their runtime's own threads
#   and wake-ups, which the gateway pays once: the .NET sum leans high.
#   commit     the durable spool's system calls as the gateway makes them today, from python3: open a recycled file,
#              pwrite the message at its old length, fdatasync, close, rename into the queue directory, one directory
#              fsync per G messages (--group, 3), and the rename out of the queue at delivery. Only the kernel's
#              (system) CPU is counted, not the interpreter's. A log-structured spool (one fdatasync per batch, no
#              renames) would cost less: this part is today's design, not a law.
#   mac        the return-path HMAC in SoftHSM2 (SignBench's hmac.hsm).
# and a dual-signed message adds its two DKIM signatures:
#   dkim       RSA-2048 and Ed25519, each once in SoftHSM2 (SignBench's hsm.rsa and hsm.ed: C_SignInit + C_Sign on a
#              cached handle) and once by OpenSSL alone (`openssl speed`, one core), the library SoftHSM2 signs with. The
#              difference is SoftHSM2's own work per signature (among it: each C_SignInit makes a new key object from
#              the token's decrypted attributes, and each signature builds an OpenSSL key from it, so RSA sets up its
#              blinding afresh and Ed25519 decodes its key from DER): spent on the gateway's cores with a software
#              token, almost none of it with a hardware one.
#
# Output: a table, and perf/results/floor-<UTC timestamp>.json. BENCH_TMP (default /var/tmp) holds the work
# directory; it must not be tmpfs, or fsync is free.
set -euo pipefail

here="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)"
root="$(cd "$here/.." && pwd)"
lib="$here/lib"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
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
((EUID == 0)) || { echo "floor.sh: run as root (smtp-sink drops to the user nobody; packages are installed with apt-get)" >&2; exit 2; }
export PATH="$PATH:/usr/sbin"

if ((install)); then
    missing=()
    for pair in smtp-sink:postfix smtp-source:postfix jq:jq python3:python3 /usr/bin/time:time ss:iproute2 findmnt:util-linux taskset:util-linux openssl:openssl; do
        command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
    done
    if ((${#missing[@]})); then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
fi
for tool in smtp-sink smtp-source jq python3 /usr/bin/time ss findmnt taskset openssl dotnet; do
    command -v "$tool" >/dev/null || { echo "floor.sh: $tool missing (packages postfix, jq, python3, time, iproute2, util-linux, openssl; the .NET SDK)" >&2; exit 1; }
done

work="$(mktemp -d "${BENCH_TMP:-/var/tmp}/smtpgw-floor.XXXXXX")"
fs=$(findmnt -no FSTYPE -T "$work")
[[ "$fs" != tmpfs ]] || { rm -rf "$work"; echo "floor.sh: $work is on tmpfs, where fsync costs nothing: set BENCH_TMP" >&2; exit 2; }
sink_pid=""
cleanup() { [[ -z "$sink_pid" ]] || kill "$sink_pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
say() { echo "[floor $(date +%H:%M:%S)] $*" >&2; }
fcalc() { awk "BEGIN { printf \"%.3f\", $* }"; }

loadgen="$here/SmtpGateway.LoadGen/bin/Release/net10.0/smtp-loadgen"
signbench="$here/SmtpGateway.SignBench/bin/Release/net10.0/smtpgw-signbench.dll"
if [[ -z "${SKIP_BUILD:-}" || ! -x "$loadgen" || ! -f "$signbench" ]]; then
    say "building smtp-loadgen and SignBench (Release)"
    dotnet build "$here/SmtpGateway.LoadGen" -c Release -nologo -v quiet >"$work/build.log" 2>&1 \
        && dotnet build "$here/SmtpGateway.SignBench" -c Release -nologo -v quiet >>"$work/build.log" 2>&1 \
        || { cat "$work/build.log" >&2; exit 1; }
fi
loadavg_before=$(cut -d' ' -f1-3 /proc/loadavg)

# start_server NAME CMD...: on a free port below the ephemeral range; sets sink_pid and sink_port.
start_server() {
    local name="$1" p i j; shift
    for i in 1 2 3 4 5; do
        p=$((10000 + RANDOM % 22000))
        [[ -z "$(ss -Htan "sport = :$p")" ]] || continue
        "$@" "$p" >/dev/null 2>"$work/$name.err" &
        sink_pid=$!
        for ((j = 0; j < 50; j++)); do
            kill -0 "$sink_pid" 2>/dev/null || break
            if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then sink_port=$p; return 0; fi
            sleep 0.1
        done
        kill "$sink_pid" 2>/dev/null || true
        sink_pid=""
    done
    echo "floor.sh: $name did not start: $(cat "$work/$name.err")" >&2; exit 1
}
stop_server() { kill "$sink_pid" 2>/dev/null || true; wait "$sink_pid" 2>/dev/null || true; sink_pid=""; }
c_sink() { exec smtp-sink -u nobody -h sink.floor -m 2048 "127.0.0.1:$1" 2048; }
# The .NET tools run with the gateway's runtime settings (src/SmtpGateway.Host: thread-pool spin limit 10, concurrent
# GC), so that the difference to the C tools is the runtime as the gateway uses it.
export DOTNET_ThreadPool_UnfairSemaphoreSpinLimit=10 DOTNET_gcConcurrent=1 DOTNET_TC_DelaySingleProcMultiplier=1
dotnet_sink() { exec "$loadgen" sink --port "$1"; }
# check_run FILE N: the load generator's result took all N messages without an error.
check_run() {
    jq -e --argjson n "$2" '.count == $n and .errors == 0 and (.refused // 0) == 0' "$1" >/dev/null \
        || { echo "floor.sh: load generator run incomplete: $(jq -c '{count, errors, refused, error_kinds}' "$1")" >&2; exit 1; }
}

# inbound NAME START_FN WARM: the server's CPU and context switches per message for the bench row's client, in
# r_cpu and r_cs.
inbound() {
    local name="$1" start="$2" warm="$3" c0 c1 acked
    start_server "$name" "$start"
    "$loadgen" run --port "$sink_port" --messages "$warm" --connections 20 --size 4096 >/dev/null
    c0=$("$lib/procstat.pl" cpu "$sink_pid"); "$lib/procstat.pl" ctxsw "$sink_pid" >"$work/ctxsw0"
    say "inbound ($name): smtp-loadgen, $messages messages, 20 sessions, 1 per connection"
    "$loadgen" run --port "$sink_port" --messages "$messages" --connections 20 --size 4096 >"$work/$name.json"
    c1=$("$lib/procstat.pl" cpu "$sink_pid")
    check_run "$work/$name.json" "$messages"
    acked=$messages
    r_cpu=$(fcalc "($c1 - $c0) * 1000 / $acked")
    r_cs=$(fcalc "$("$lib/procstat.pl" ctxsw-since "$sink_pid" "$work/ctxsw0") / $acked")
    stop_server
}
inbound smtp-sink c_sink 1000
in_c=$r_cpu in_c_cs=$r_cs
# The .NET server warms until tiered compilation is done with its loop (as bench.sh warms the gateway).
inbound dotnet-sink dotnet_sink 20000
in_net=$r_cpu in_net_cs=$r_cs

# outbound: the client's own CPU over 20 kept connections (a pool of 20 to one smarthost).
start_server smtp-sink c_sink
say "outbound (C): smtp-source -d, $messages messages over 20 kept connections"
/usr/bin/time -f '%U %S %w %c' -o "$work/source.time" smtp-source -d -s 20 -m "$messages" -l 4096 \
    -f sender@tenant-a.example -t rcpt@example.net "127.0.0.1:$sink_port" >"$work/source.out" 2>&1 \
    || { echo "floor.sh: smtp-source failed: $(tail -3 "$work/source.out")" >&2; exit 1; }
if ! read -r out_c out_c_cs < <(awk -v n="$messages" 'NF == 4 { printf "%.3f %.3f\n", ($1 + $2) * 1000 / n, ($3 + $4) / n }' "$work/source.time"); then
    echo "floor.sh: no CPU line from /usr/bin/time: $(cat "$work/source.time")" >&2; exit 1
fi
# client_cpu_s is the whole process's CPU, start-up and JIT included: a run of 3N less a run of N leaves 2N messages
# of steady state.
say "outbound (.NET): smtp-loadgen --per-conn 1000, runs of $messages and $((3 * messages)) messages over 20 kept connections"
"$loadgen" run --port "$sink_port" --messages "$messages" --connections 20 --per-conn 1000 --size 4096 >"$work/outbound1.json"
check_run "$work/outbound1.json" "$messages"
"$loadgen" run --port "$sink_port" --messages "$((3 * messages))" --connections 20 --per-conn 1000 --size 4096 >"$work/outbound3.json"
check_run "$work/outbound3.json" "$((3 * messages))"
out_net=$(jq -n --slurpfile a "$work/outbound1.json" --slurpfile b "$work/outbound3.json" --argjson n "$messages" \
    '($b[0].client_cpu_s - $a[0].client_cpu_s) * 1000 / (2 * $n) * 1000 | round / 1000')
stop_server

# commit: the spool's system calls for one message, as the gateway makes them today.
say "commit: open, pwrite, fdatasync, close, rename in, directory fsync per $group, rename out ($messages messages)"
if ! read -r commit commit_user commit_cs < <(python3 - "$work/spool" "$messages" "$group" <<'EOF'
import os, resource, sys
root, n, group = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
tmp, queue = os.path.join(root, "tmp"), os.path.join(root, "queue")
os.makedirs(tmp)
os.makedirs(queue)
data = b"x" * 4608
free = [os.path.join(tmp, f"free.{i}") for i in range(64)]
names = [os.path.join(queue, f"m{i}") for i in range(64)]
for p in free:  # recycled files at their old length: the gateway's steady state
    fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o600)
    os.pwrite(fd, data, 0)
    os.fsync(fd)
    os.close(fd)
qfd = os.open(queue, os.O_RDONLY | os.O_DIRECTORY)
os.fsync(qfd)
before = resource.getrusage(resource.RUSAGE_SELF)
for i in range(n):
    p, q = free[i % 64], names[i % 64]
    fd = os.open(p, os.O_WRONLY)
    os.pwrite(fd, data, 0)
    os.fdatasync(fd)
    os.close(fd)
    os.rename(p, q)
    if i % group == group - 1:
        os.fsync(qfd)
    os.rename(q, p)  # delivered: back to the free list
after = resource.getrusage(resource.RUSAGE_SELF)
print("%.3f %.3f %.3f" % ((after.ru_stime - before.ru_stime) * 1000 / n, (after.ru_utime - before.ru_utime) * 1000 / n,
                          (after.ru_nvcsw + after.ru_nivcsw - before.ru_nvcsw - before.ru_nivcsw) / n))
EOF
); then
    echo "floor.sh: the commit measurement failed" >&2; exit 1
fi

# mac and dkim: SoftHSM2's HMAC for the return path and the two DKIM signatures, from one SignBench run (one token set
# up, one warm-up). SignBench prints the median thread CPU in µs per operation in its second column.
say "mac and dkim: SignBench hmac.hsm, hsm.rsa, hsm.ed; then openssl speed rsa2048 ed25519 on one core"
if ! read -r mac hsm_rsa hsm_ed < <(dotnet "$signbench" --only hmac.hsm,hsm.rsa,hsm.ed --rounds 5 2>"$work/signbench.err" \
        | awk '$1 == "hmac.hsm" { m = $2 / 1000 } $1 == "hsm.rsa" { r = $2 / 1000 } $1 == "hsm.ed" { e = $2 / 1000 }
               END { if (m > 0 && r > 0 && e > 0) printf "%.3f %.3f %.3f\n", m, r, e; else exit 1 }'); then
    echo "floor.sh: SignBench printed no hmac.hsm, hsm.rsa or hsm.ed row: $(tail -3 "$work/signbench.err")" >&2; exit 1
fi

# dkim, OpenSSL alone: openssl speed prints signatures per second in the next-to-last column of its summary lines
# ("rsa 2048 bits ... sign/s verify/s", "253 bits EdDSA (Ed25519) ...").
# One of the CPUs this process may run on (a cpuset may leave out CPU 0).
one_cpu=$(awk '/^Cpus_allowed_list:/ { split($2, a, "[,-]"); print a[1] }' /proc/self/status)
if ! read -r ossl_rsa ossl_ed < <(taskset -c "$one_cpu" openssl speed -seconds 3 rsa2048 ed25519 2>"$work/openssl.err" \
        | awk '/^rsa 2048 bits / { r = 1000 / $(NF - 1) } /\(Ed25519\)/ { e = 1000 / $(NF - 1) } END { if (r > 0 && e > 0) printf "%.3f %.3f\n", r, e; else exit 1 }'); then
    echo "floor.sh: openssl speed printed no rsa2048 or Ed25519 summary line: $(tail -3 "$work/openssl.err")" >&2; exit 1
fi
dkim_hsm=$(fcalc "$hsm_rsa + $hsm_ed")
dkim_ossl=$(fcalc "$ossl_rsa + $ossl_ed")

sum_c=$(fcalc "$in_c + $out_c + $commit + $mac")
sum_net=$(fcalc "$in_net + $out_net + $commit + $mac")
stamp=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$here/results"
jq -n --argjson in_c "$in_c" --argjson in_c_cs "$in_c_cs" --argjson in_net "$in_net" --argjson in_net_cs "$in_net_cs" \
    --argjson out_c "$out_c" --argjson out_c_cs "$out_c_cs" --argjson out_net "$out_net" \
    --argjson commit "$commit" --argjson commit_user "$commit_user" --argjson commit_cs "$commit_cs" --argjson mac "$mac" \
    --argjson sum_c "$sum_c" --argjson sum_net "$sum_net" --argjson messages "$messages" --argjson group "$group" \
    --argjson hsm_rsa "$hsm_rsa" --argjson hsm_ed "$hsm_ed" --argjson ossl_rsa "$ossl_rsa" --argjson ossl_ed "$ossl_ed" \
    --argjson dkim_hsm "$dkim_hsm" --argjson dkim_ossl "$dkim_ossl" \
    --arg openssl "$(openssl version | cut -d' ' -f1-2)" --arg softhsm "$(dpkg-query -W -f='${Version}' softhsm2 2>/dev/null || echo unknown)" \
    --arg cpu "$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)" --arg cores "$(nproc)" --arg kernel "$(uname -r)" \
    --arg fs "$fs" --arg commit_id "$(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown)" \
    --arg load0 "$loadavg_before" --arg load1 "$(cut -d' ' -f1-3 /proc/loadavg)" '
    {name: "floor", messages: $messages, group: $group, commit: $commit_id,
     machine: {cpu: $cpu, cores: ($cores | tonumber), kernel: $kernel, work_fs: $fs, loadavg_before: $load0, loadavg_after: $load1},
     cpu_ms_per_msg: {inbound_smtp_sink: $in_c, inbound_dotnet_sink: $in_net,
                      outbound_smtp_source_kept: $out_c, outbound_dotnet_loadgen_kept: $out_net,
                      commit_syscalls_system: $commit, commit_interpreter_user: $commit_user,
                      verp_hmac_softhsm2: $mac, sum_c: $sum_c, sum_dotnet: $sum_net},
     dkim_ms_per_signature: {softhsm2_rsa2048: $hsm_rsa, softhsm2_ed25519: $hsm_ed, openssl_rsa2048: $ossl_rsa, openssl_ed25519: $ossl_ed,
                             softhsm2_both: $dkim_hsm, openssl_both: $dkim_ossl, softhsm2_version: $softhsm, openssl_version: $openssl},
     dual_signed_floor_ms_per_msg: {dotnet_with_softhsm2: (($sum_net + $dkim_hsm) * 1000 | round / 1000),
                                    dotnet_with_openssl_cost: (($sum_net + $dkim_ossl) * 1000 | round / 1000)},
     ctxsw_per_msg: {inbound_smtp_sink: $in_c_cs, inbound_dotnet_sink: $in_net_cs,
                     outbound_smtp_source_kept: $out_c_cs, commit_syscalls: $commit_cs}}' >"$here/results/floor-$stamp.json"

printf '%-56s %-8s %-8s %s\n' "part (per message)" "C" ".NET" "ctxsw C/.NET" \
    "inbound: the bench row's sessions, server CPU" "$in_c" "$in_net" "$in_c_cs / $in_net_cs" \
    "outbound: one transaction on a kept connection" "$out_c" "$out_net" "$out_c_cs / -" \
    "commit: today's spool syscalls (kernel CPU), dir fsync/$group" "$commit" "$commit" "$commit_cs" \
    "return-path HMAC in SoftHSM2" "$mac" "$mac" "-" \
    "sum (CPU ms)" "$sum_c" "$sum_net" ""
printf '%-56s %-8s %-8s\n' "DKIM, ms per signature" "RSA-2048" "Ed25519" \
    "SoftHSM2 $(dpkg-query -W -f='${Version}' softhsm2 2>/dev/null): C_SignInit + C_Sign" "$hsm_rsa" "$hsm_ed" \
    "$(openssl version | cut -d' ' -f1-2) alone (openssl speed, one core)" "$ossl_rsa" "$ossl_ed"
printf '%-56s %s\n' "dual-signed floor, .NET (sum + both in SoftHSM2)" "$(fcalc "$sum_net + $dkim_hsm")" \
    "  the same if the token cost what OpenSSL does" "$(fcalc "$sum_net + $dkim_ossl")"
echo "results: perf/results/floor-$stamp.json"
