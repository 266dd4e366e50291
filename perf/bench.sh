#!/usr/bin/env bash
# perf/bench.sh — SmtpGateway beside Postfix, in one run on this machine (issue 5).
#
#   perf/bench.sh [options]
#
# Rows (each into its own fresh `smtp-sink`, counted at the sink the same way for every row):
#   ceiling            smtp-source  -> smtp-sink                 (the harness ceiling; ratios are against this)
#   ceiling-loadgen    smtp-loadgen -> smtp-sink                 (what our own client can push; plain only)
#   postfix            smtp-loadgen -> Postfix relay -> sink     (private instance, queue on disk, default fsync)
#   postfix+opendkim   same, OpenDKIM milter signing RSA-2048
#   smtpgw             smtp-loadgen -> SmtpGateway -> sink       (durable spool, Smarthost delivery)
#   smtpgw+dkim-*      RSA-2048 / Ed25519 / both in SoftHSM2     ("skipped: signing not built" until `smtpgw dkim` exists)
#   smtpgw@50%         smtpgw paced at half of its measured rate (p99 latency target)
#
# Gateway rows also report bytes allocated per message (table: allocKB/msg; JSON: alloc_bytes_per_msg, alloc_bytes):
# the gateway's total allocated bytes (dotnet_gc_heap_total_allocated_bytes_total, the runtime's System.Runtime meter
# on its /metrics, read through the admin unix socket of the row's data directory) after the run minus before it,
# over the same window as the CPU (after the warm-up, until the sink has everything), divided by the messages
# acknowledged. "-" (null) for a build without the runtime meter on /metrics.
# Gateway rows also report context switches per message (JSON: ctxsw_per_msg): voluntary + involuntary switches of
# the gateway's threads (/proc/PID/task/*/status, per thread against a snapshot taken when the window opens; a thread
# that exits inside the window is left out) over the same window, divided by the messages at the sink. On a VM each
# switch is expensive (issue 15's profiles), and the count travels between machines better than CPU time.
# Gateway rows warm up until the JIT is quiet (see gw_warm_jit); JSON: warmup.messages, warmup.jit_s (JIT seconds
# before the window) and jit_s (JIT seconds inside it).
# Signed gateway rows also report the token's own CPU per message (table: HSMms/msg; JSON: hsm_cpu_ms_per_msg, and
# cpu_ms_per_msg_without_hsm = cpu_ms_per_msg minus it): the signing threads' CPU inside C_SignInit+C_Sign
# (smtpgw_hsm_sign_cpu_seconds_total on the gateway's /metrics, every algorithm summed) over the same window, divided
# by the messages at the sink. SoftHSM2 computes on the gateway's cores; this is that share, measured where it runs
# (under the row's load and contention, not in a benchmark loop). "-" (null) for unsigned rows and older builds.
#
# Options:
#   --size 1k|4k|100k      message size (4k)
#   --sessions N           concurrent client sessions (20)
#   --per-conn N           messages per connection (1)
#   --mode plain|starttls|auth
#                          plain: legacy relay port (tenant by client network);
#                          starttls: submission + STARTTLS, no AUTH (recipient in a tenant domain);
#                          auth: submission + STARTTLS + AUTH PLAIN (gateway: tenant token; Postfix: Cyrus sasldb)
#   --messages N           messages per system (20000)
#   --quick                2000 messages per system (smoke test)
#   --only LIST            comma list of rows: ceiling,postfix,postfix-dkim,smtpgw,smtpgw-dkim,halfpeak
#   --kill-test            only: SIGKILL the gateway mid-run, restart it, check acknowledged <= received at sink
#   --idle [N]             only: hold N (10000) idle connections to the gateway, report its peak RSS
#   --fairness             only: rows `fairness` and `fairness_signing` (issue 12). Tenant A floods at --flood-factor
#                          (10) times its MessagesPerMinute (--a-limit, 6000) from --a-conns (20) connections while
#                          tenant B sends at --b-rate (20/s) from --b-conns (4) under its own limit (--b-limit, 6000);
#                          B's accepted rate and p99 (end of DATA -> 250) against B alone (the mean of a run before
#                          and one after the flood), each --duration (60) s long (one whole limit window, so a
#                          per-minute limiter's burst is inside it).
#                          fairness_signing: both tenants DKIM-signed (RSA-2048 in SoftHSM2); A floods unpaced from
#                          --sign-a-conns (50) connections, far past its limits (MessagesPerMinute --sign-a-limit, 6000;
#                          MaxConcurrentSigning --sign-a-share, 4, the default share), so every message A gets
#                          accepted is signed while B's are.
#                          --only fairness / --only fairness-signing runs one of the two.
#   --slow-clients [N]     only: row `slow_clients`: N (1000) sessions trickle one byte every --slow-interval (5) s
#                          (--slow-phase mixed: half inside a command line, half inside DATA) while tenant A sends at
#                          full speed for --duration (20) s; against the same client without them (run before and
#                          after); counts the slow sessions the gateway closed within --slow-hold (60) s, and with
#                          which reply. --slow-timeout S (45; 0 = the gateway's own) sets Gateway:Limits:CommandTimeout
#                          and DataTimeout (the grace of MinDataRate) so that the limits fall inside the run.
#   --gw-set KEY=VALUE     a gateway setting (config path with ':') for every gateway started; repeatable, e.g.
#                          --gw-set Gateway:Limits:MinDataRate=240
#   --gw-sched POLICY      batch (default, as config/examples/smtpgw.service sets it: CPUSchedulingPolicy=batch) or
#                          other: the Linux scheduling policy every gateway is started with (`chrt`); recorded as
#                          scenario.gw_sched, and what took effect as each gateway row's sched_seen. Postfix and
#                          the load generator keep the policy bench.sh runs under (normally SCHED_OTHER).
#   --gw-cores LIST        comma list of core counts, e.g. 1,2: the gateway rows (smtpgw and smtpgw+dkim-*, as --only
#                          selects them) run once per count N, named e.g. smtpgw@1c, smtpgw+dkim-rsa2048@2c, with the
#                          gateway pinned by `taskset` to the first N online CPUs and the load generator and smtp-sink
#                          to the remaining ones; when none remain (N = all CPUs) they share all CPUs, reported as
#                          "shared_cores": true. Each N: a whole number from 1 to the number of online CPUs usable by
#                          this shell (/sys/devices/system/cpu/online and its affinity). A second table lists, per row
#                          and N, msg/s, the gateway's CPU ms per message and both as a ratio to the smallest N
#                          (JSON: cores, gw_cpus, client_cpus, shared_cores, cpu_ms_per_msg_vs_min_cores,
#                          rate_vs_min_cores). smtpgw@50% is skipped with --gw-cores. Without it nothing is pinned.
#   --profile SECS         also sample the loaded gateway with `perf record` for SECS s (needs linux-perf)
#   --no-install           do not apt-get anything
#   --keep                 keep the work directory (default: removed unless something failed)
# Environment: SKIP_BUILD=1 reuses existing builds; BENCH_TMP (default /var/tmp) holds the work directory — it
# must not be tmpfs, or fsync is free. SMTPGW_ROOT=DIR measures the gateway of another checkout (e.g. a clean
# `git archive HEAD` export with a .commit file naming the commit) with this harness.
#
# Output: one table on stdout, the same as JSON in perf/results/<UTC timestamp>.json.
set -euo pipefail

ORIG_ARGS="$*"
here="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)"
root="$(cd "$here/.." && pwd)"
lib="$here/lib"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1

size=4k sessions=20 per_conn=1 mode=plain messages="" quick=0 only="" kill_test=0 idle=0 idle_count=10000
install=1 keep=0 profile_secs=0
fairness=0 slow_clients=0 slow_count=1000 duration=""
a_limit=6000 flood_factor=10 a_conns=20 b_rate=20 b_conns=4 b_limit=6000 sign_a_conns=50 sign_a_limit=6000 sign_a_share=4
slow_interval=5 slow_hold=60 slow_timeout=45 slow_phase=mixed
declare -a gw_settings=()
gw_cores="" gw_sched=batch
while (($#)); do
    case "$1" in
        --size) size="$2"; shift 2 ;;
        --sessions) sessions="$2"; shift 2 ;;
        --per-conn) per_conn="$2"; shift 2 ;;
        --mode) mode="$2"; shift 2 ;;
        --messages) messages="$2"; shift 2 ;;
        --quick) quick=1; shift ;;
        --only) only="$2"; shift 2 ;;
        --kill-test) kill_test=1; shift ;;
        --idle) idle=1; if [[ "${2:-}" =~ ^[0-9]+$ ]]; then idle_count="$2"; shift; fi; shift ;;
        --profile) profile_secs="$2"; shift 2 ;;
        --fairness) fairness=1; shift ;;
        --slow-clients) slow_clients=1; if [[ "${2:-}" =~ ^[0-9]+$ ]]; then slow_count="$2"; shift; fi; shift ;;
        --duration) duration="$2"; shift 2 ;;
        --a-limit) a_limit="$2"; shift 2 ;;
        --flood-factor) flood_factor="$2"; shift 2 ;;
        --a-conns) a_conns="$2"; shift 2 ;;
        --b-rate) b_rate="$2"; shift 2 ;;
        --b-conns) b_conns="$2"; shift 2 ;;
        --b-limit) b_limit="$2"; shift 2 ;;
        --sign-a-conns) sign_a_conns="$2"; shift 2 ;;
        --sign-a-limit) sign_a_limit="$2"; shift 2 ;;
        --sign-a-share) sign_a_share="$2"; shift 2 ;;
        --slow-interval) slow_interval="$2"; shift 2 ;;
        --slow-hold) slow_hold="$2"; shift 2 ;;
        --slow-timeout) slow_timeout="$2"; shift 2 ;;
        --slow-phase) slow_phase="$2"; shift 2 ;;
        --gw-set) [[ "$2" == *=* ]] || { echo "bench.sh: --gw-set takes KEY=VALUE" >&2; exit 2; }; gw_settings+=("$2"); shift 2 ;;
        --gw-sched) [[ "${2:-}" == batch || "${2:-}" == other ]] || { echo "bench.sh: --gw-sched takes batch or other" >&2; exit 2; }; gw_sched="$2"; shift 2 ;;
        --gw-cores) [[ -n "${2:-}" ]] || { echo "bench.sh: --gw-cores takes a comma list of core counts, e.g. 1,2" >&2; exit 2; }; gw_cores="$2"; shift 2 ;;
        --no-install) install=0; shift ;;
        --keep) keep=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench.sh: unknown option $1 (--help)" >&2; exit 2 ;;
    esac
done
case "$size" in 1k|4k|100k) ;; *) echo "bench.sh: --size must be 1k, 4k or 100k" >&2; exit 2 ;; esac
case "$mode" in plain|starttls|auth) ;; *) echo "bench.sh: --mode must be plain, starttls or auth" >&2; exit 2 ;; esac
[[ "$sessions" =~ ^[0-9]+$ && "$per_conn" =~ ^[0-9]+$ ]] || { echo "bench.sh: --sessions/--per-conn take numbers" >&2; exit 2; }
if [[ -z "$messages" ]]; then messages=$((quick ? 2000 : 20000)); fi
for v in a_limit flood_factor a_conns b_rate b_conns b_limit sign_a_conns sign_a_limit sign_a_share slow_count slow_hold slow_timeout; do
    [[ "${!v}" =~ ^[0-9]+$ ]] || { echo "bench.sh: --${v//_/-} takes a whole number" >&2; exit 2; }
done
[[ "$slow_interval" =~ ^[0-9]+(\.[0-9]+)?$ ]] || { echo "bench.sh: --slow-interval takes a number of seconds" >&2; exit 2; }
case "$slow_phase" in command|data|mixed) ;; *) echo "bench.sh: --slow-phase must be command, data or mixed" >&2; exit 2 ;; esac
if ((fairness)) && [[ "$mode" == starttls ]]; then
    echo "bench.sh: --fairness needs tenant sessions: --mode plain (tenants by source address) or auth (tokens)" >&2; exit 2
fi
if [[ -z "$duration" ]]; then duration=$((slow_clients ? 20 : 60)); fi
[[ "$duration" =~ ^[0-9]+$ ]] && ((duration > 0)) || { echo "bench.sh: --duration takes whole seconds" >&2; exit 2; }
size_bytes=$(( ${size%k} * 1024 ))

# --gw-cores: the CPUs this run may use (online, and in this shell's own affinity), in order; parsed, never assumed
# to be 0..n-1.
cpulist_expand() {   # "0-3,8,10-11" -> one CPU number a line
    local IFS=, part
    for part in $1; do
        part="${part//[[:space:]]/}"
        if [[ "$part" =~ ^([0-9]+)-([0-9]+)$ ]]; then seq "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"
        elif [[ "$part" =~ ^[0-9]+$ ]]; then echo "$part"; fi
    done
}
cpulist_join() {   # CPU numbers as arguments -> "0-3,8" (taskset -c syntax)
    local out="" first="" prev="" c
    for c in "$@" end; do
        if [[ "$c" != end && -n "$prev" ]] && ((c == prev + 1)); then prev=$c; continue; fi
        if [[ -n "$first" ]]; then
            out+="${out:+,}$first"
            if ((prev != first)); then out+="-$prev"; fi
        fi
        first=$c; prev=$c
    done
    echo "$out"
}
declare -a cpus_usable=() core_counts=()
if [[ -n "$gw_cores" ]]; then
    if ((kill_test || idle || fairness || slow_clients)); then
        echo "bench.sh: --gw-cores applies to the throughput rows (smtpgw, smtpgw-dkim), not to --kill-test, --idle, --fairness or --slow-clients" >&2; exit 2
    fi
    online_list=$(cat /sys/devices/system/cpu/online 2>/dev/null || echo "0-$(( $(nproc --all) - 1 ))")
    allowed_list=$(awk '/^Cpus_allowed_list:/ {print $2}' "/proc/$$/status" 2>/dev/null || true)
    mapfile -t cpus_online < <(cpulist_expand "$online_list")
    if [[ -n "$allowed_list" ]]; then
        allowed=" $(cpulist_expand "$allowed_list" | tr '\n' ' ') "
        for c in "${cpus_online[@]}"; do [[ "$allowed" == *" $c "* ]] && cpus_usable+=("$c"); done
    fi
    ((${#cpus_usable[@]})) || cpus_usable=("${cpus_online[@]}")
    IFS=, read -r -a requested <<<"$gw_cores"
    ((${#requested[@]})) || { echo "bench.sh: --gw-cores takes a comma list of core counts, e.g. 1,2" >&2; exit 2; }
    for n in "${requested[@]}"; do
        if ! [[ "$n" =~ ^[0-9]+$ ]] || ((10#$n < 1 || 10#$n > ${#cpus_usable[@]})); then
            echo "bench.sh: --gw-cores: '$n' is not a core count from 1 to ${#cpus_usable[@]} (online CPUs: $online_list${allowed_list:+, this shell may use $allowed_list})" >&2; exit 2
        fi
    done
    mapfile -t core_counts < <(for n in "${requested[@]}"; do echo $((10#$n)); done | sort -n -u)
    if [[ -n "$only" && ",$only," != *",smtpgw,"* && ",$only," != *",smtpgw-dkim,"* ]]; then
        echo "bench.sh: --gw-cores: --only $only selects no gateway row (smtpgw, smtpgw-dkim)" >&2; exit 2
    fi
fi

say() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'bench.sh: error: %s\n' "$*" >&2; exit 1; }
want() { [[ -z "$only" || ",$only," == *",$1,"* ]]; }

# --- 1. Packages -------------------------------------------------------------------------------------------
pkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
install_packages() {
    local wanted=(postfix opendkim opendkim-tools softhsm2 swaks openssl jq perl curl) missing=() p
    [[ "$mode" == auth ]] && wanted+=(sasl2-bin libsasl2-modules)
    ((profile_secs > 0)) && wanted+=(linux-perf)
    [[ -n "$gw_cores" ]] && wanted+=(util-linux)   # taskset
    for p in "${wanted[@]}"; do pkg_installed "$p" || missing+=("$p"); done
    ((${#missing[@]} == 0)) && return 0
    if ((install)) && [[ $(id -u) == 0 ]]; then
        say "installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        # Postfix without touching /etc/postfix/main.cf: "No configuration". We only use private instances.
        echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
        apt-get update -qq >&2
        apt-get install -y -qq "${missing[@]}" >&2
        # Debian starts packaged daemons where it can; the benchmark runs its own, so stop any that got started.
        if pkg_installed opendkim && command -v service >/dev/null 2>&1; then service opendkim stop >/dev/null 2>&1 || true; fi
    else
        die "missing packages: ${missing[*]} (apt-get install -y ${missing[*]})"
    fi
}
install_packages
[[ -x /usr/sbin/smtp-sink && -x /usr/sbin/smtp-source ]] || die "smtp-sink/smtp-source missing (package postfix)"

# --- Work directory, process bookkeeping, cleanup ------------------------------------------------------------
bench_tmp="${BENCH_TMP:-/var/tmp}"
work="$(mktemp -d "$bench_tmp/smtpgw-bench.XXXXXX")"
chmod 755 "$work"     # smtp-sink (nobody) and Postfix (postfix) reach their directories below this one
declare -a pids=() postfix_dirs=()
failed=0
cleanup() {
    local rc=$? p d
    for d in "${postfix_dirs[@]}"; do
        postfix -c "$d/etc" stop >/dev/null 2>&1 || true
    done
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    sleep 0.5
    for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; rm -f "/tmp/perf-$p.map"; done
    for d in "${postfix_dirs[@]}"; do
        if [[ -s "$d/spool/pid/master.pid" ]]; then kill -KILL "$(tr -d ' ' <"$d/spool/pid/master.pid")" 2>/dev/null || true; fi
    done
    if ((keep || failed || rc != 0)); then
        say "work directory kept: $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Processes we start: remember them so that cleanup stops them. Call as: start_bg NAME LOG cmd...; sets $bg_pid.
start_bg() {
    local name="$1" log="$2"; shift 2
    "$@" >"$log" 2>&1 &
    bg_pid=$!
    pids+=("$bg_pid")
}
stop_pid() {
    local p="$1" i
    kill -TERM "$p" 2>/dev/null || return 0
    for i in $(seq 1 50); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
}

used_ports=" "
free_port() {
    local p
    while true; do
        # Below the ephemeral range (32768-60999 by default), so that no client connection holds it.
        p=$((10000 + RANDOM % 22000))
        [[ "$used_ports" == *" $p "* ]] && continue
        if ! ss -Htan "sport = :$p" 2>/dev/null | grep -q .; then used_ports+="$p "; echo "$p"; return; fi
    done
}
# Waits until PORT answers with a 220 banner (up to $2 seconds).
wait_banner() {
    local port="$1" limit="${2:-60}" line i
    for ((i = 0; i < limit * 10; i++)); do
        if { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null; then
            line=""
            read -r -t 5 line <&3 || true
            printf 'QUIT\r\n' >&3 2>/dev/null || true
            exec 3<&- 3>&-
            [[ "$line" == 220* ]] && return 0
        fi
        sleep 0.1
    done
    return 1
}
now() { date +%s.%N; }
fcalc() { awk "BEGIN { printf \"%.3f\", $* }"; }

# --- 2. Builds -------------------------------------------------------------------------------------------------
gw_root="${SMTPGW_ROOT:-$root}"   # the gateway checkout to build and measure (default: this one)
gw_out="$gw_root/src/SmtpGateway.Host/bin/Release/net10.0"
lg_out="$here/SmtpGateway.LoadGen/bin/Release/net10.0"
if [[ "${SKIP_BUILD:-0}" != 1 || ! -e "$gw_out/smtpgw.dll" || ! -e "$lg_out/smtp-loadgen.dll" ]]; then
    command -v dotnet >/dev/null 2>&1 || die "dotnet (the .NET 10 SDK) is not on PATH"
    say "building smtpgw and smtp-loadgen (Release)"
    dotnet build "$gw_root/src/SmtpGateway.Host/SmtpGateway.Host.csproj" -c Release -nologo -v quiet -clp:NoSummary >&2 || die "smtpgw build failed"
    dotnet build "$here/SmtpGateway.LoadGen/SmtpGateway.LoadGen.csproj" -c Release -nologo -v quiet -clp:NoSummary >&2 || die "smtp-loadgen build failed"
fi
smtpgw() { if [[ -x "$gw_out/smtpgw" ]]; then "$gw_out/smtpgw" "$@"; else dotnet "$gw_out/smtpgw.dll" "$@"; fi; }
loadgen() { if [[ -x "$lg_out/smtp-loadgen" ]]; then "${pin_client[@]}" "$lg_out/smtp-loadgen" "$@"; else "${pin_client[@]}" dotnet "$lg_out/smtp-loadgen.dll" "$@"; fi; }

# --- CPU pinning (--gw-cores) -----------------------------------------------------------------------------------
# pin_cores N: the gateway on the first N usable CPUs, the load generator, smtp-sink (and its counter) and the RSS
# sampler on the rest; all of them on every usable CPU when none are left (shared). pin_cores "" (and the default):
# nothing pinned. Sets pin_gw and pin_client (command prefixes: taskset execs, so a started PID stays the program's).
declare -a pin_gw=() pin_client=()
pin_n="" pin_gw_cpus="" pin_client_cpus="" pin_shared=false
pin_cores() {
    pin_n="$1"; pin_gw=(); pin_client=(); pin_gw_cpus=""; pin_client_cpus=""; pin_shared=false
    [[ -n "$pin_n" ]] || return 0
    pin_gw_cpus=$(cpulist_join "${cpus_usable[@]:0:pin_n}")
    if ((pin_n < ${#cpus_usable[@]})); then
        pin_client_cpus=$(cpulist_join "${cpus_usable[@]:pin_n}")
    else
        pin_client_cpus=$(cpulist_join "${cpus_usable[@]}"); pin_shared=true
    fi
    pin_gw=(taskset -c "$pin_gw_cpus")
    pin_client=(taskset -c "$pin_client_cpus")
}
# pin_suffix: "@Nc" for a pinned row's name, "" otherwise.
pin_suffix() { if [[ -n "$pin_n" ]]; then echo "@${pin_n}c"; fi; }
# pin_annotate: adds the pinning (and the affinity actually observed on the gateway and the sink) to the last row.
pin_annotate() {
    [[ -n "$pin_n" ]] || return 0
    local last_row; last_row="$rows_dir/$(printf %02d $row_seq).json"
    jq --argjson n "$pin_n" --arg gw "$pin_gw_cpus" --arg cl "$pin_client_cpus" --argjson shared "$pin_shared" \
       --arg gw_seen "$pin_gw_seen" --arg sink_seen "$pin_sink_seen" '
        . + {cores: $n, gw_cpus: $gw, client_cpus: $cl, shared_cores: $shared,
             affinity_seen: {gateway: $gw_seen, sink: $sink_seen}}' "$last_row" >"$last_row.tmp" && mv "$last_row.tmp" "$last_row"
}
affinity_of() { awk '/^Cpus_allowed_list:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo "?"; }
pin_gw_seen="" pin_sink_seen=""

# TLS material for starttls/auth rows (both servers use the same certificate): EC P-256 like certs/gen-dev-cert.sh.
tls_crt="$work/tls/server.crt" tls_key="$work/tls/server.key"
mkdir -p "$work/tls"
openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -keyout "$tls_key" -out "$tls_crt" \
    -days 2 -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" >/dev/null 2>&1 || die "openssl failed"
chmod 644 "$tls_crt"; chmod 600 "$tls_key"

sender="sender@tenant-a.example"
# Unauthenticated STARTTLS sessions are inbound mail to the gateway: only tenant domains are accepted as recipients.
# The same recipient is used for every row of a run.
if [[ "$mode" == starttls ]]; then rcpt="rcpt@tenant-a.example"; else rcpt="rcpt@example.net"; fi
rcpt_inbound="rcpt@tenant-a.example"   # --slow-clients: the data-phase slow sessions are inbound mail to a tenant domain

# --- Sinks: one fresh smtp-sink per row, counted by lib/sinkwatch.pl from `smtp-sink -c` -------------------------
# start_sink NAME → sets sink_port, sink_state, sink_pid
start_sink() {
    local name="$1" dir="$work/sink-$1" attempt
    for attempt in 1 2 3; do
        rm -rf "$dir"
        start_sink_once "$name" "$dir" && return 0
    done
    die "smtp-sink did not start: $(cat "$dir/sink.err")"
}
start_sink_once() {
    local name="$1" dir="$2"
    mkdir -p "$dir"
    sink_port=$(free_port)
    sink_state="$dir/count"
    mkfifo "$dir/fifo"
    # The watcher's open of the FIFO waits for smtp-sink's; it ends at EOF, when the sink exits.
    "${pin_client[@]}" perl "$lib/sinkwatch.pl" "$sink_state" <"$dir/fifo" >"$dir/watch.log" 2>&1 &
    pids+=("$!")
    "${pin_client[@]}" smtp-sink -c -u nobody -h sink.bench -m 2048 "127.0.0.1:$sink_port" 2048 >"$dir/fifo" 2>"$dir/sink.err" &
    sink_pid=$!
    pids+=("$sink_pid")
    wait_banner "$sink_port" 20
}
# Messages the current sink has received (wait_banner's probe sessions carry none).
sink_count() { awk '{print $1}' "$sink_state" 2>/dev/null || echo 0; }
sink_last() { awk '{print $3}' "$sink_state" 2>/dev/null || echo 0; }
# wait_drain TARGET [STABLE_SECS] [LIMIT_SECS]: until the sink has TARGET messages, or its count has not moved for
# STABLE_SECS (default 10), or LIMIT_SECS (default 180) passed.
wait_drain() {
    local target="$1" stable="${2:-10}" limit="${3:-180}" last=-1 since start c
    start=$(date +%s); since=$start
    while true; do
        c=$(sink_count)
        ((c >= target)) && return 0
        if ((c != last)); then last=$c; since=$(date +%s); fi
        (( $(date +%s) - since >= stable )) && return 1
        (( $(date +%s) - start >= limit )) && return 1
        sleep 0.1
    done
}

# --- Rows -----------------------------------------------------------------------------------------------------
rows_dir="$work/rows"; mkdir -p "$rows_dir"
row_seq=0
add_row() { row_seq=$((row_seq + 1)); printf '%s\n' "$1" >"$rows_dir/$(printf %02d $row_seq).json"; }
skip_row() { add_row "$(jq -n --arg n "$1" --arg c "$2" --arg r "$3" '{name:$n, client:$c, skipped:$r}')"; }

loadgen_args=(--connections "$sessions" --per-conn "$per_conn" --size "$size" --from "$sender" --to "$rcpt")

# gw_allocated SOCKET → the gateway's total allocated bytes since it started, or nothing when it cannot say.
# Why the gateway's own /metrics (the runtime's System.Runtime meter, .NET 9+) rather than `dotnet-counters collect`:
# it is the cumulative counter itself (GC.GetTotalAllocatedBytes), read at the two instants that bound the run, where
# dotnet-counters reports counters as rates per refresh interval that would have to be summed back (losing the partial
# intervals at both ends); it needs no extra tool, no diagnostic IPC attach (which DOTNET_EnableDiagnostics=0 would
# refuse) and no timing between a collector's start and the run; and it is the series operators scrape. The admin
# unix socket of the data directory is the local operator (no key, no TCP port). The "after" scrape's own
# allocations fall inside the window: one page, against thousands of messages.
gw_allocated() { gw_counter "$1" dotnet_gc_heap_total_allocated_bytes_total '%.0f'; }

# gw_jit SOCKET → seconds the gateway's JIT has spent compiling since it started (dotnet_jit_compilation_time_seconds_total).
gw_jit() { gw_counter "$1" dotnet_jit_compilation_time_seconds_total '%.3f'; }

# gw_hsm_cpu SOCKET → seconds of CPU the gateway's signing threads spent inside C_Sign since it started (every
# algorithm's series summed), or nothing when /metrics has no such series (no signature yet, or an older build).
gw_hsm_cpu() { gw_counter "$1" smtpgw_hsm_sign_cpu_seconds_total '%.6f'; }

# gw_counter SOCKET NAME FORMAT → the value of a counter on the gateway's /metrics, summed over its series (labels),
# or nothing when it has none.
gw_counter() {
    curl -sf --max-time 10 --unix-socket "$1" http://localhost/metrics 2>/dev/null \
        | awk -v n="$2" -v f="$3\n" '$1 == n || index($1, n "{") == 1 { sub(/^[^{ ]*(\{[^}]*\})? /, ""); sum += $1; seen = 1 }
                                      END { if (seen) printf f, sum }' || true
}

# gw_warm_jit NAME DIR PORT ROOTS [loadgen args...] (inside measure: sets warmed, wjit)
# Tiered compilation goes on well past the first thousand messages: on the 2-vCPU VM the JIT spent about 5 s of CPU
# over the first 15,000 (tier 0, then instrumented code, then tier 1 of every method that gets hot), which would land
# in the row as "CPU per message" though a relay pays it once per start. So the warm-up goes on in batches of 1,000
# until one batch's JIT time is at most 5 % of the gateway's CPU over it (at most 30 batches). The row records how many
# messages that took (acknowledged ones), the JIT seconds spent until then (warmup.jit_s), whether the threshold was met
# (warmup.quiet), and the JIT seconds inside its own window (jit_s), so that every figure stays visible.
gw_warm_jit() {
    local name="$1" dir="$2" port="$3" roots="$4"; shift 4
    local batch=1000 i j0 j1="" c0 c1 s0 n
    wquiet=false
    for ((i = 1; i <= 30; i++)); do
        j0=$(gw_jit "$alloc_sock")
        [[ -n "$j0" ]] || { say "$name: no JIT counter on the gateway's /metrics: warm-up not extended"; wquiet=""; return 0; }
        # shellcheck disable=SC2086
        c0=$("$lib/procstat.pl" cpu $roots); s0=$(sink_count)
        loadgen run --port "$port" "${loadgen_args[@]}" "$@" --messages "$batch" --rate 0 --label "$name warm-up $i" \
            --out "$dir/warmup-$i.json" >>"$dir/warmup.out" 2>&1 || true
        n=$(jq .count "$dir/warmup-$i.json" 2>/dev/null || echo 0)
        wait_drain $((s0 + n)) 5 60 || say "$name: warm-up batch $i did not drain"
        # shellcheck disable=SC2086
        c1=$("$lib/procstat.pl" cpu $roots); j1=$(gw_jit "$alloc_sock")
        warmed=$((warmed + n))
        if [[ -z "$j1" || -z "$c0" || -z "$c1" ]]; then say "$name: warm-up batch $i: JIT or CPU not readable; warm-up ends here"; break; fi
        if awk "BEGIN { exit !(($j1 - $j0) <= 0.05 * ($c1 - $c0)) }"; then wquiet=true; break; fi
    done
    wjit=$j1
    if [[ "$wquiet" == true ]]; then
        say "$name: warm-up $warmed messages until the JIT went quiet (JIT ${j1:-?} s so far)"
    else
        say "$name: warm-up $warmed messages; the JIT was still above 5 % of the CPU when the warm-up stopped (JIT ${j1:-?} s so far)"
    fi
}

# measure NAME CLIENT_LABEL PORT "ROOT_PIDS" "EXTRA_PIDS" [loadgen args...]
# Runs the load generator against PORT, waits for the sink to receive everything acknowledged, and records the row.
# ROOT_PIDS: the server's process tree roots (CPU and memory summed over each tree); EXTRA_PIDS: e.g. opendkim.
# alloc_sock=SOCKET (prefix assignment, gateway rows): also the bytes the gateway allocated per acknowledged message.
measure() {
    local name="$1" client="$2" port="$3" roots="$4" extra="$5"; shift 5
    local dir="$work/row-$name"; mkdir -p "$dir"
    local cpu0 cpu1 xcpu0=0 xcpu1=0 sink0 sinkc0 sinkc1 alloc0="" alloc1="" ctxsw="" hsm0="" hsm1=""
    # Warm-up, not measured: a tenth of the run (200..1000 messages), unpaced, and drained, so that the row sees a
    # steady state (JIT-compiled code for .NET, a warm process pool for Postfix) rather than start-up costs.
    local warm=$((messages / 10)); ((warm > 1000)) && warm=1000; ((warm < 200)) && warm=200
    sink0=$(sink_count)
    loadgen run --port "$port" "${loadgen_args[@]}" "$@" --messages "$warm" --rate 0 --label "$name warm-up" \
        --out "$dir/warmup.json" >"$dir/warmup.out" 2>&1 || true
    wait_drain $((sink0 + $(jq .count "$dir/warmup.json" 2>/dev/null || echo 0))) 5 60 || say "$name: warm-up did not drain"
    local warmed=$warm jit0="" jit1="" wjit="" wquiet=""
    [[ -z "${alloc_sock:-}" ]] || gw_warm_jit "$name" "$dir" "$port" "$roots" "$@"
    # shellcheck disable=SC2086
    cpu0=$("$lib/procstat.pl" cpu $roots)
    [[ -n "$extra" ]] && xcpu0=$("$lib/procstat.pl" cpu $extra)
    sinkc0=$("$lib/procstat.pl" cpu "$sink_pid")
    [[ -z "${alloc_sock:-}" ]] || { alloc0=$(gw_allocated "$alloc_sock"); jit0=$(gw_jit "$alloc_sock"); hsm0=$(gw_hsm_cpu "$alloc_sock"); "$lib/procstat.pl" ctxsw "$roots" >"$dir/ctxsw0"; }
    start_bg "sampler-$name" "$dir/sampler.log" "${pin_client[@]}" "$lib/procstat.pl" sample "$dir/rss" 0.5 $roots
    local sampler=$bg_pid
    sink0=$(sink_count)
    say "$name: $client → 127.0.0.1:$port (${messages} msgs, $sessions sessions, $per_conn/conn, $size, $mode)"
    loadgen run --port "$port" "${loadgen_args[@]}" "$@" --label "$name" --out "$dir/loadgen.json" >"$dir/loadgen.out" 2>"$dir/loadgen.err" || true
    if [[ ! -s "$dir/loadgen.json" ]]; then
        failed=1; say "$name: load generator failed: $(tail -3 "$dir/loadgen.err")"
        skip_row "$name" "$client" "load generator failed"
        stop_pid "$sampler"
        return 0
    fi
    local acked; acked=$(jq .count "$dir/loadgen.json")
    wait_drain $((sink0 + acked)) 10 240 || say "$name: sink has $(( $(sink_count) - sink0 )) of $acked acknowledged messages after waiting"
    cpu1=$("$lib/procstat.pl" cpu $roots)
    [[ -n "$extra" ]] && xcpu1=$("$lib/procstat.pl" cpu $extra)
    sinkc1=$("$lib/procstat.pl" cpu "$sink_pid")
    [[ -z "${alloc_sock:-}" ]] || { alloc1=$(gw_allocated "$alloc_sock"); jit1=$(gw_jit "$alloc_sock"); hsm1=$(gw_hsm_cpu "$alloc_sock"); ctxsw=$("$lib/procstat.pl" ctxsw-since "$roots" "$dir/ctxsw0"); }
    if [[ -n "${alloc_sock:-}" && ( -z "$alloc0" || -z "$alloc1" ) ]]; then
        say "$name: no dotnet_gc_heap_total_allocated_bytes_total on the gateway's /metrics ($alloc_sock): allocKB/msg not reported"
    fi
    sleep 0.3; stop_pid "$sampler"
    local hwm=0 rss_peak xrss_peak=0 single=1
    # A single server process: its own VmHWM. A process tree (Postfix): the sampled peak of the tree's summed Pss.
    if [[ "$roots" != *" "* ]] && [[ -z "$(pgrep -P "$roots" 2>/dev/null)" ]]; then hwm=$("$lib/procstat.pl" hwm "$roots"); else single=0; fi
    rss_peak=$(awk '{print $1}' "$dir/rss" 2>/dev/null || echo 0)
    [[ -z "$extra" ]] || xrss_peak=$("$lib/procstat.pl" hwm $extra)   # the milter: one process
    local received last started
    received=$(( $(sink_count) - sink0 ))
    last=$(sink_last)
    started=$(jq .started_unix "$dir/loadgen.json")
    # The scheduling policy the server's main thread has at the end of the row (the gateway's should be --gw-sched's).
    local sched_seen; sched_seen=$(chrt -p "${roots%% *}" 2>/dev/null | awk -F': ' '/policy/ {print $2}' || true)
    add_row "$(jq -n --arg name "$name" --arg client "$client" --slurpfile lg "$dir/loadgen.json" \
        --arg sched "${sched_seen:-?}" \
        --argjson received "$received" --argjson last "$last" --argjson started "$started" \
        --argjson cpu "$(fcalc "$cpu1 - $cpu0")" --argjson xcpu "$(fcalc "$xcpu1 - $xcpu0")" \
        --argjson sinkcpu "$(fcalc "$sinkc1 - $sinkc0")" \
        --argjson hwm "$hwm" --argjson rsspeak "$rss_peak" --argjson xrss "$xrss_peak" --argjson single "$single" \
        --arg gw "${alloc_sock:+1}" --arg alloc0 "$alloc0" --arg alloc1 "$alloc1" --arg ctxsw "$ctxsw" \
        --arg hsm0 "$hsm0" --arg hsm1 "$hsm1" \
        --arg jit0 "$jit0" --arg jit1 "$jit1" --arg wjit "$wjit" --argjson warmed "$warmed" --arg wquiet "$wquiet" '
        ($lg[0]) as $l
        | ($last - $started) as $secs
        | {name: $name, client: $client,
           acknowledged: $l.count, errors: $l.errors, error_kinds: $l.error_kinds,
           connect_failures: $l.connect_failures,
           refused: ($l.refused // 0), refused_by_code: ($l.refused_by_code // {}),
           received_at_sink: $received,
           seconds: ($secs * 1000 | round / 1000),
           rate: (if $secs > 0 then ($received / $secs * 10 | round / 10) else 0 end),
           client_rate_acks: $l.throughput,
           latency_ms: $l.latency_ms,
           cpu_s: {server: (($cpu + $xcpu) * 100 | round / 100), server_main: $cpu, milter: $xcpu, client: $l.client_cpu_s, sink: $sinkcpu},
           cpu_ms_per_msg: (if $received > 0 then (($cpu + $xcpu) * 1000 / $received * 1000 | round / 1000) else null end),
           rss_mb: {server: ((if $single == 1 then $hwm else $rsspeak end) / 1024 * 10 | round / 10),
                    how: (if $single == 1 then "VmHWM" else "peak of the Pss summed over the process tree, sampled every 0.5 s" end),
                    milter: ($xrss / 1024 * 10 | round / 10)},
           sched_seen: $sched}
        + (if $gw == "" then {} else
             (if $alloc0 != "" and $alloc1 != "" then ($alloc1 | tonumber) - ($alloc0 | tonumber) else null end) as $a
             | {alloc_bytes: $a,
                alloc_bytes_per_msg: (if $a != null and $l.count > 0 then ($a / $l.count | round) else null end),
                ctxsw_per_msg: (if $ctxsw != "" and $received > 0 then ($ctxsw | tonumber) / $received * 10 | round / 10 else null end),
                # A series that appeared inside the window (the first signature of the row) started at 0.
                hsm_cpu_ms_per_msg: (if $hsm1 != "" and $received > 0
                    then ((($hsm1 | tonumber) - (if $hsm0 != "" then ($hsm0 | tonumber) else 0 end)) * 1000 / $received * 1000 | round / 1000)
                    else null end),
                warmup: {messages: $warmed, jit_s: (if $wjit != "" then ($wjit | tonumber) else null end),
                         quiet: (if $wquiet == "" then null else $wquiet == "true" end)},
                jit_s: (if $jit0 != "" and $jit1 != "" then (($jit1 | tonumber) - ($jit0 | tonumber)) * 1000 | round / 1000 else null end)}
             end)
        | if .hsm_cpu_ms_per_msg != null and .cpu_ms_per_msg != null
          then . + {cpu_ms_per_msg_without_hsm: ((.cpu_ms_per_msg - .hsm_cpu_ms_per_msg) * 1000 | round / 1000)} else . end')"
    say "$name: acked $acked, at sink $received, $(jq -r '"\(.rate) msg/s, p50 \(.latency_ms.p50) ms, p99 \(.latency_ms.p99) ms"' "$rows_dir/$(printf %02d $row_seq).json")"
}

# --- Ceiling ----------------------------------------------------------------------------------------------------
row_ceiling() {
    # Three smtp-source runs, each into a fresh sink; the row reports the median run (the machine is shared and
    # noisy; the ceiling is the denominator of every vs_ceiling, so one unlucky run must not set it).
    local run runs=() dir="$work/row-ceiling" args=(-s "$sessions" -m "$messages" -l "$size_bytes" -f "$sender" -t "$rcpt")
    mkdir -p "$dir"
    ((per_conn > 1)) && args+=(-d)   # -d: keep the connection for the next message (smtp-source has no "M per connection")
    say "ceiling: smtp-source → smtp-sink ($messages msgs, 3 runs)"
    for run in 1 2 3; do
        start_sink "ceiling-$run"
        local t0 t1 s0 s1 received; t0=$(now); s0=$("$lib/procstat.pl" cpu "$sink_pid")
        /usr/bin/time -f '%U %S' -o "$dir/time-$run" smtp-source "${args[@]}" "127.0.0.1:$sink_port" >"$dir/out-$run" 2>&1 \
            || say "ceiling: smtp-source: $(tail -2 "$dir/out-$run")"
        wait_drain "$messages" 5 60 || true
        t1=$(sink_last); s1=$("$lib/procstat.pl" cpu "$sink_pid"); received=$(sink_count)
        stop_pid "$sink_pid"
        runs+=("$(jq -n --argjson r "$received" --argjson m "$messages" --argjson secs "$(fcalc "$t1 - $t0")" \
            --argjson ccpu "$(awk '{print $1 + $2}' "$dir/time-$run")" --argjson scpu "$(fcalc "$s1 - $s0")" '
            {received_at_sink: $r, errors: ($m - $r), seconds: ($secs * 1000 | round / 1000),
             rate: ($r / $secs * 10 | round / 10), cpu_s: {server: null, client: $ccpu, sink: $scpu}}')")
    done
    add_row "$(printf '%s\n' "${runs[@]}" | jq -s '
        (sort_by(.rate) | .[1]) + {name: "ceiling", client: "smtp-source", acknowledged: null, latency_ms: null,
         cpu_ms_per_msg: null, rss_mb: null, runs_rate: map(.rate),
         note: "median of 3 runs; smtp-source cannot time end-of-DATA; no TLS/AUTH: always plain"}')"
    say "ceiling: median $(jq -r .rate "$rows_dir/$(printf %02d $row_seq).json") msg/s (runs: $(jq -c .runs_rate "$rows_dir/$(printf %02d $row_seq).json"))"

    # Our own client straight into the sink: how far smtp-loadgen itself can go (plain; smtp-sink has no TLS).
    start_sink ceiling-loadgen
    local saved=("${loadgen_args[@]}")
    measure ceiling-loadgen smtp-loadgen "$sink_port" "$sink_pid" "" --messages "$messages"
    # (the "server" here is smtp-sink itself)
    stop_pid "$sink_pid"
    loadgen_args=("${saved[@]}")
}

# --- Postfix ------------------------------------------------------------------------------------------------------
# postfix_start NAME SINK_PORT [MILTER_PORT] → sets pf_dir, pf_port, pf_master
postfix_start() {
    local name="$1" relay_port="$2" milter_port="${3:-}"
    pf_dir="$work/postfix-$name"
    pf_port=$(free_port)
    mkdir -p "$pf_dir/etc" "$pf_dir/spool" "$pf_dir/data"
    chown postfix:postfix "$pf_dir/data"
    cat >"$pf_dir/etc/main.cf" <<EOF
# Private Postfix instance for perf/bench.sh (row $name). The system's /etc/postfix is not used.
compatibility_level = 3.6
queue_directory = $pf_dir/spool
data_directory = $pf_dir/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
shlib_directory = /usr/lib/postfix
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.bench
mydomain = bench
myorigin = \$myhostname
mydestination =
local_transport = error:local delivery disabled
alias_maps =
alias_database =
relay_domains =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
relayhost = [127.0.0.1]:$relay_port
smtp_tls_security_level = none
smtputf8_enable = no
biff = no
maillog_file_prefixes = $work
maillog_file = $pf_dir/maillog
EOF
    if [[ "$mode" != plain ]]; then
        cp "$tls_crt" "$pf_dir/etc/server.crt"; cp "$tls_key" "$pf_dir/etc/server.key"; chmod 600 "$pf_dir/etc/server.key"
        cat >>"$pf_dir/etc/main.cf" <<EOF
smtpd_tls_security_level = may
smtpd_tls_cert_file = $pf_dir/etc/server.crt
smtpd_tls_key_file = $pf_dir/etc/server.key
smtpd_tls_session_cache_database =
EOF
    else
        echo "smtpd_tls_security_level = none" >>"$pf_dir/etc/main.cf"
    fi
    if [[ "$mode" == auth ]]; then
        # Cyrus SASL with a private sasldb. Debian's Postfix reads smtpd.conf from $config_directory/sasl/.
        mkdir -p "$pf_dir/etc/sasl"
        cat >"$pf_dir/etc/sasl/smtpd.conf" <<EOF
pwcheck_method: auxprop
auxprop_plugin: sasldb
sasldb_path: $pf_dir/etc/sasl/sasldb2
mech_list: PLAIN
EOF
        printf '%s' "$pf_sasl_pass" | saslpasswd2 -p -c -f "$pf_dir/etc/sasl/sasldb2" -u postfix.bench tenant-a
        chown -R postfix:postfix "$pf_dir/etc/sasl"
        cat >>"$pf_dir/etc/main.cf" <<EOF
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = cyrus
smtpd_sasl_path = smtpd
cyrus_sasl_config_path = $pf_dir/etc/sasl
smtpd_sasl_local_domain = postfix.bench
smtpd_tls_auth_only = yes
EOF
    fi
    if [[ -n "$milter_port" ]]; then
        cat >>"$pf_dir/etc/main.cf" <<EOF
smtpd_milters = inet:127.0.0.1:$milter_port
non_smtpd_milters =
milter_default_action = tempfail
EOF
    fi
    # chroot off everywhere (no copies of /etc files needed); otherwise Debian's stock services.
    cat >"$pf_dir/etc/master.cf" <<EOF
127.0.0.1:$pf_port inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
    postfix_dirs+=("$pf_dir")
    if ! postfix -c "$pf_dir/etc" start >"$pf_dir/start.log" 2>&1; then
        script -qc "postfix -c $pf_dir/etc check" /dev/null >>"$pf_dir/start.log" 2>&1 || true
        die "Postfix ($name) did not start: $(tail -5 "$pf_dir/start.log"; tail -5 "$pf_dir/maillog" 2>/dev/null)"
    fi
    wait_banner "$pf_port" 30 || die "Postfix ($name) is not answering on $pf_port: $(tail -5 "$pf_dir/maillog")"
    pf_master=$(tr -d ' ' <"$pf_dir/spool/pid/master.pid")
}
postfix_stop() {
    postfix -c "$pf_dir/etc" stop >/dev/null 2>&1 || true
    local i; for i in $(seq 1 50); do kill -0 "$pf_master" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pf_master" 2>/dev/null || true
}

# OpenDKIM: RSA-2048 key for tenant-a.example; start_opendkim → sets dkim_port, dkim_pid
start_opendkim() {
    local dir="$work/opendkim"
    mkdir -p "$dir/keys"
    opendkim-genkey -b 2048 -a -d tenant-a.example -s bench -D "$dir/keys" >/dev/null 2>&1 || die "opendkim-genkey failed"
    chown -R opendkim:opendkim "$dir/keys"; chmod 600 "$dir/keys/bench.private"
    dkim_port=$(free_port)
    cat >"$dir/opendkim.conf" <<EOF
Syslog                  no
Mode                    s
Domain                  tenant-a.example
Selector                bench
KeyFile                 $dir/keys/bench.private
Canonicalization        relaxed/relaxed
SignatureAlgorithm      rsa-sha256
OversignHeaders         From
InternalHosts           127.0.0.1
Socket                  inet:$dkim_port@127.0.0.1
UserID                  opendkim:opendkim
RequireSafeKeys         false
PidFile                 $dir/opendkim.pid
EOF
    start_bg opendkim "$dir/opendkim.log" opendkim -f -x "$dir/opendkim.conf"
    dkim_pid=$bg_pid
    local i; for i in $(seq 1 100); do ss -Htln "sport = :$dkim_port" | grep -q . && return 0; kill -0 "$dkim_pid" 2>/dev/null || break; sleep 0.1; done
    die "opendkim did not start: $(cat "$dir/opendkim.log")"
}

# Probe: one message through a server into a dumping smtp-sink; succeed when the dump has a DKIM-Signature.
# probe_dkim_dump NAME PORT SINKDIR → returns 0 when every dumped message carries COUNT signatures
dump_sink_start() {
    dump_dir="$work/dump-$1"; mkdir -p "$dump_dir"; chmod 777 "$dump_dir"
    dump_port=$(free_port)
    start_bg "dump-$1" "$dump_dir.log" smtp-sink -u nobody -h sink.bench -d "$dump_dir/m." "127.0.0.1:$dump_port" 64
    dump_pid=$bg_pid
    wait_banner "$dump_port" 20 || die "dumping smtp-sink did not start"
}

pf_sasl_pass="bench-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
postfix_auth_args() {
    case "$mode" in
        plain) ;;
        starttls) echo --starttls ;;
        auth) echo --starttls --auth-user tenant-a --auth-pass "$pf_sasl_pass" ;;
    esac
}

row_postfix() {
    start_sink postfix
    postfix_start plain "$sink_port"
    # shellcheck disable=SC2046
    measure postfix smtp-loadgen "$pf_port" "$pf_master" "" --messages "$messages" $(postfix_auth_args)
    postfix_stop; stop_pid "$sink_pid"
}

row_postfix_dkim() {
    start_opendkim
    # Check that OpenDKIM really signs: one message into a dumping sink first.
    dump_sink_start postfix-dkim
    postfix_start dkim-probe "$dump_port" "$dkim_port"
    # shellcheck disable=SC2046
    loadgen run --port "$pf_port" --connections 1 --messages 1 --size "$size" --from "$sender" --to "$rcpt" $(postfix_auth_args) >"$dump_dir/probe.json" 2>&1 || true
    local i signed=0
    for i in $(seq 1 150); do
        if grep -q '^DKIM-Signature: v=1; a=rsa-sha256' "$dump_dir"/m.* 2>/dev/null; then signed=1; break; fi
        sleep 0.1
    done
    postfix_stop; stop_pid "$dump_pid"
    ((signed)) || { failed=1; say "postfix+opendkim: the probe message was not signed; see $dump_dir"; }

    start_sink postfix-dkim
    postfix_start dkim "$sink_port" "$dkim_port"
    # shellcheck disable=SC2046
    measure "postfix+opendkim-rsa2048" smtp-loadgen "$pf_port" "$pf_master" "$dkim_pid" --messages "$messages" $(postfix_auth_args)
    postfix_stop; stop_pid "$sink_pid"; stop_pid "$dkim_pid"
}

# --- SmtpGateway ------------------------------------------------------------------------------------------------
# gw_config DIR SINK_PORT → writes DIR/conf/gateway.json (the repository's config/gateway.json with everything that
# touches the machine replaced, as tests/.../GatewayHarness.cs does); sets gw_relay_port, gw_sub_port.
# Tenants get "Dkim": {"Unsigned": true} (signing fails closed otherwise): the unsigned rows make no keys on purpose;
# the DKIM rows add keys, and a tenant with an active selector is signed either way.
# With --sessions above the per-IP limit (default 50; every client is 127.0.0.1) the limit is raised to sessions+10
# (Postfix exempts $mynetworks from its own per-client limit, so both serve every session).
# The default per-tenant rates (Gateway:TenantLimits, 60,000 messages a minute) are raised to 1,000,000: since issue 15
# one tenant's load on 2 cores goes past 1,000 messages a second, and a row must measure the relay, not refusals by a
# limit Postfix does not have. The limiter still runs for every message; the fairness rows set their own limits.
# Spool:Sync is FileSystem (group syncfs calls, not an fdatasync per message), which is NOT what Sync Auto picks on
# this VM: Auto takes it only for a spool on a file system of its own, and this VM has one disk, which the spool can
# only get here through a loop device, whose writes a loop kernel thread would make outside the gateway's CPU time.
# During the gateway rows the other writers on that disk are the bench's own logs and the system's journal, small next
# to the spool; an operator with a disk for the spool gets this mode from Auto. --gw-set Gateway:Spool:Sync=File
# measures the per-file mode (the default here); the result's scenario.spool_sync names the mode ("off" without fsync).
# The config lives in its own directory beside the data directory (the gateway's reload watches the config file alone,
# not its directory tree, since issue 15, so either layout costs the same; this one is kept so that rows stay
# comparable with the builds before, which watched the tree).
gw_config() {
    local dir="$1" sink="$2"
    mkdir -p "$dir/conf"
    gw_relay_port=$(free_port); gw_sub_port=$(free_port)
    jq --arg dd "$dir/data" --arg crt "$tls_crt" --arg key "$tls_key" \
       --argjson relay "$gw_relay_port" --argjson sub "$gw_sub_port" --argjson sink "$sink" --argjson sessions "$sessions" '
        .Gateway.ServerName = "smtpgw.bench"
        | .Gateway.DataDirectory = $dd
        | .Gateway.Tls = {CertificatePath: $crt, KeyPath: $key}
        | .Gateway.Listeners = [
            {Name: "submission", Kind: "Submission", Address: "127.0.0.1", Port: $sub},
            {Name: "relay", Kind: "Relay", Address: "127.0.0.1", Port: $relay}]
        | .Gateway.Spool = ((.Gateway.Spool // {}) + {Fsync: true, Sync: "FileSystem"})
        | .Gateway.Delivery.Mode = "Smarthost"
        | .Gateway.Delivery.Smarthost = {Host: "127.0.0.1", Port: $sink, StartTls: "None", MaxConnections: 20}
        | .Gateway.Delivery.AllowPrivateDestinations = true
        | .Gateway.Admin = ((.Gateway.Admin // {}) + {Enabled: true, Port: 0, SocketPath: "admin/admin.sock"})
        | .Gateway.Delivery.Retry = {Schedule: ["00:00:01", "00:00:02", "00:00:05"], Jitter: 0.1}
        | .Tenants |= with_entries(.value.Dkim = (.value.Dkim // {Unsigned: true}))
        | .Gateway.TenantLimits = ((.Gateway.TenantLimits // {}) + {MessagesPerMinute: 1000000, RecipientsPerMinute: 1000000})
        | if $sessions + 10 > (.Gateway.Limits.MaxConnectionsPerIp // 50)
          then .Gateway.Limits.MaxConnectionsPerIp = $sessions + 10 else . end
        ' "$gw_root/config/gateway.json" >"$dir/conf/gateway.json"
}
# The gateway's Spool:Sync in this run: gw_config's FileSystem unless --gw-set gave another, "off" when it turned Fsync
# off (configuration keys are case-insensitive, as .NET reads them).
spool_sync_mode() {
    local kv key mode=FileSystem fsync=true
    for kv in "${gw_settings[@]}"; do
        key="${kv%%=*}"; key="${key,,}"
        [[ "$key" == "gateway:spool:sync" ]] && mode="${kv#*=}"
        [[ "$key" == "gateway:spool:fsync" ]] && fsync="${kv#*=}"
    done
    [[ "${fsync,,}" == "false" ]] && mode=off
    echo "$mode"
}
# The admin unix socket of gw_config's data directory: bytes allocated per message are read from /metrics there.
gw_admin_sock() { echo "$1/data/admin/admin.sock"; }
# gw_start DIR [env...] → sets gw_pid
gw_start() {
    local dir="$1"; shift
    local perfmap=()
    # --profile: JIT-compiled frames get names in perf (writes /tmp/perf-PID.map; W^X off or perf sees only
    # "memfd:doublemapper").
    ((profile_secs > 0)) && perfmap=(DOTNET_PerfMapEnabled=1 DOTNET_EnableWriteXorExecute=0)
    # --gw-set KEY=VALUE: "Gateway:Limits:X" is the environment variable SMTPGW__Gateway__Limits__X.
    local kv key settings=()
    for kv in "${gw_settings[@]}"; do key="${kv%%=*}"; settings+=("SMTPGW__${key//:/__}=${kv#*=}"); done
    # DOTNET_TC_DelaySingleProcMultiplier=1 as the shipped unit and image set it (config/examples/smtpgw.service,
    # Dockerfile): pinned to one CPU (--gw-cores 1) .NET otherwise delays tier-up tenfold, the JIT goes quiet long
    # before the hot code is optimised, and the row measures tier-0 code (1.17 against 0.58 ms per message: results
    # 20261205T114508Z and 115925Z).
    # SCHED_BATCH as the shipped unit sets it (CPUSchedulingPolicy=batch): a woken gateway thread does not preempt
    # the running one; on two cores shared with the load, about a third fewer context switches per message (README
    # "Hot path").
    local sched=(chrt --batch 0); [[ "$gw_sched" == other ]] && sched=(chrt --other 0)
    start_bg smtpgw "$dir/smtpgw.log" "${pin_gw[@]}" env "${perfmap[@]}" DOTNET_TC_DelaySingleProcMultiplier=1 \
        SMTPGW__Logging__LogLevel__Default=Warning \
        SMTPGW__Logging__LogLevel__Microsoft.Hosting.Lifetime=Warning "${settings[@]}" "$@" \
        "${sched[@]}" "$gw_out/smtpgw" serve --config "$dir/conf/gateway.json"
    gw_pid=$bg_pid
    wait_banner "$gw_relay_port" 60 || die "smtpgw did not start: $(tail -20 "$dir/smtpgw.log")"
    # env (and taskset) exec: $gw_pid is smtpgw itself.
    if [[ -n "$pin_n" ]]; then
        pin_gw_seen=$(affinity_of "$gw_pid"); pin_sink_seen=$(affinity_of "$sink_pid")
        say "pinned: smtpgw (pid $gw_pid) on CPUs $pin_gw_seen; smtp-sink (pid $sink_pid) on $pin_sink_seen; load generator on $pin_client_cpus$([[ $pin_shared == true ]] && echo ' (shared with the gateway: no CPU left)')"
    fi
}
gw_token=""
# The load generator's flags for the mode (the port comes from gw_port_for_mode).
gw_client_args() {
    case "$mode" in
        plain) ;;
        starttls) echo --starttls ;;
        auth) echo --starttls --auth-user tenant-a --auth-pass "$gw_token" ;;
    esac
}
gw_port_for_mode() { if [[ "$mode" == plain ]]; then echo "$gw_relay_port"; else echo "$gw_sub_port"; fi; }
gw_mint() {
    # Every tenant with return paths (or AUTH) needs its HSM token: the VERP and session-token HMAC keys live there
    # (issue 11). Idempotent, and harmless for older builds, which used the token only for DKIM.
    smtpgw hsm init-token --config "$1/conf/gateway.json" --tenant tenant-a >"$1/init-token.log" 2>&1 \
        || die "smtpgw hsm init-token failed: $(tail -3 "$1/init-token.log")"
    [[ "$mode" == auth ]] || return 0
    gw_token=$(smtpgw token mint --config "$1/conf/gateway.json" --tenant tenant-a --ttl 1h --description bench 2>"$1/mint.err") \
        || die "smtpgw token mint failed: $(cat "$1/mint.err")"
}

gw_rate=0
# row_smtpgw [N]: N cores (--gw-cores): the row smtpgw@Nc, pinned.
row_smtpgw() {
    pin_cores "${1:-}"
    local name; name="smtpgw$(pin_suffix)"
    start_sink "$name"
    local dir="$work/$name"
    gw_config "$dir" "$sink_port"; gw_mint "$dir"; gw_start "$dir"
    local client; client=$(gw_client_args)
    # shellcheck disable=SC2086
    alloc_sock=$(gw_admin_sock "$dir") measure "$name" smtp-loadgen "$(gw_port_for_mode)" "$gw_pid" "" --messages "$messages" $client
    pin_annotate
    # smtpgw@50% paces at the unpinned row's rate only.
    [[ -n "$pin_n" ]] || gw_rate=$(jq -r .rate "$rows_dir/$(printf %02d $row_seq).json")
    if ((profile_secs > 0)); then profile_gateway "$dir" "$client"; fi
    stop_pid "$gw_pid"; stop_pid "$sink_pid"
    pin_cores ""
}

# p99 at half of the peak rate just measured (issue 5 target: under 20 ms)
row_halfpeak() {
    [[ -z "$gw_cores" ]] || { skip_row "smtpgw@50%" smtp-loadgen "not run with --gw-cores"; return; }
    [[ "$gw_rate" != 0 && -n "$gw_rate" ]] || { skip_row "smtpgw@50%" smtp-loadgen "needs the smtpgw row"; return; }
    local rate n; rate=$(fcalc "$gw_rate / 2"); n=$(awk -v r="$rate" -v q="$quick" 'BEGIN { s = q ? 5 : 15; n = int(r * s); if (n < 500) n = 500; print n }')
    start_sink halfpeak
    local dir="$work/smtpgw-halfpeak"
    gw_config "$dir" "$sink_port"; gw_mint "$dir"; gw_start "$dir"
    local client; client=$(gw_client_args)
    local saved=$messages; messages=$n
    # shellcheck disable=SC2086
    alloc_sock=$(gw_admin_sock "$dir") measure "smtpgw@50%" "smtp-loadgen (paced $rate/s)" "$(gw_port_for_mode)" "$gw_pid" "" --messages "$n" --rate "$rate" $client
    messages=$saved
    stop_pid "$gw_pid"; stop_pid "$sink_pid"
}

# ======================================================================================================================
# >>> DKIM SIGNING ROWS (SmtpGateway) >>>
# RSA-2048, Ed25519 and dual-signed rows, keys in SoftHSM2 (one token per tenant under the row's data directory),
# when this build has `smtpgw dkim`; otherwise each row reads "skipped: signing not built".
# Setup follows ./run.sh's dev_hsm: `smtpgw hsm init-token`, then `smtpgw dkim keygen` per algorithm (the first key
# of an algorithm for a domain signs at once). Only tenant sessions are signed: in --mode starttls (no AUTH: inbound
# mail) the probe below reports the rows as unsigned.
gw_dkim_setup() {   # gw_dkim_setup DIR ALGS [TENANT DOMAIN] (ALGS space-separated: rsa2048 ed25519; tenant-a)
    local dir="$1" algs="$2" tenant="${3:-tenant-a}" domain="${4:-tenant-a.example}" alg
    smtpgw hsm init-token --config "$dir/conf/gateway.json" --tenant "$tenant" >"$dir/init-token-$tenant.log" 2>&1 \
        || { say "smtpgw hsm init-token ($tenant) failed: $(tail -3 "$dir/init-token-$tenant.log")"; return 1; }
    for alg in $algs; do
        smtpgw dkim keygen --config "$dir/conf/gateway.json" --tenant "$tenant" --domain "$domain" \
            --selector "bench${alg%%[0-9]*}" --alg "$alg" >"$dir/dns-$tenant-$alg.txt" 2>"$dir/keygen-$tenant-$alg.err" \
            || { say "smtpgw dkim keygen ($tenant, $alg) failed: $(tail -3 "$dir/keygen-$tenant-$alg.err")"; return 1; }
    done
}
# rows_smtpgw_dkim [N]: N cores (--gw-cores): rows smtpgw+dkim-*@Nc, pinned (each with its own keys and probe).
rows_smtpgw_dkim() {
    pin_cores "${1:-}"
    rows_smtpgw_dkim_variants
    pin_cores ""
}
rows_smtpgw_dkim_variants() {
    local variants=("rsa2048:rsa2048" "ed25519:ed25519" "rsa2048+ed25519:rsa2048 ed25519") v name algs
    if ! smtpgw dkim --help >/dev/null 2>&1; then
        for v in "${variants[@]}"; do skip_row "smtpgw+dkim-${v%%:*}$(pin_suffix)" smtp-loadgen "skipped: signing not built"; done
        return 0
    fi
    if [[ "$mode" == starttls ]]; then
        # STARTTLS without AUTH is unauthenticated (inbound) mail to the gateway: it signs tenant sessions only.
        for v in "${variants[@]}"; do skip_row "smtpgw+dkim-${v%%:*}$(pin_suffix)" smtp-loadgen "skipped: --mode starttls has no tenant session, nothing is signed (use plain or auth)"; done
        return 0
    fi
    for v in "${variants[@]}"; do
        name="smtpgw+dkim-${v%%:*}$(pin_suffix)"; algs="${v#*:}"
        local dir="$work/smtpgw-dkim-${v%%:*}$(pin_suffix)"
        # Probe first: one message into a dumping sink must carry one signature per algorithm.
        dump_sink_start "$name"
        gw_config "$dir" "$dump_port"; gw_mint "$dir"
        gw_dkim_setup "$dir" "$algs" || { skip_row "$name" smtp-loadgen "key setup failed"; stop_pid "$dump_pid"; continue; }
        gw_start "$dir"
        # shellcheck disable=SC2046
        loadgen run --port "$(gw_port_for_mode)" $(gw_client_args) --connections 1 --messages 1 --size "$size" --from "$sender" --to "$rcpt" >"$dump_dir/probe.json" 2>&1 || true
        local i sigs=0 want; want=$(wc -w <<<"$algs")
        for i in $(seq 1 150); do
            sigs=$(cat "$dump_dir"/m.* 2>/dev/null | grep -c '^DKIM-Signature:' || true)
            ((sigs >= want)) && break
            sleep 0.1
        done
        stop_pid "$gw_pid"; stop_pid "$dump_pid"
        if [[ "$sigs" != "$want" ]]; then
            failed=1; say "$name: probe message has $sigs DKIM-Signature header(s), expected $want; see $dump_dir"
        fi
        # The measured run: same data directory (keys stay), delivery to a fresh counting sink.
        start_sink "$name"
        jq --argjson p "$sink_port" '.Gateway.Delivery.Smarthost.Port = $p' "$dir/conf/gateway.json" >"$dir/conf/g.tmp" && mv "$dir/conf/g.tmp" "$dir/conf/gateway.json"
        gw_start "$dir"
        local client; client=$(gw_client_args)
        # shellcheck disable=SC2086
        alloc_sock=$(gw_admin_sock "$dir") measure "$name" smtp-loadgen "$(gw_port_for_mode)" "$gw_pid" "" --messages "$messages" $client
        local last_row; last_row="$rows_dir/$(printf %02d $row_seq).json"
        jq --argjson s "$sigs" '. + {probe_dkim_signatures: $s}' "$last_row" >"$last_row.tmp" && mv "$last_row.tmp" "$last_row"
        pin_annotate
        stop_pid "$gw_pid"; stop_pid "$sink_pid"
    done
}
# <<< DKIM SIGNING ROWS <<<
# ======================================================================================================================

# ======================================================================================================================
# >>> FAIRNESS AND SLOW CLIENTS (issue 12) >>>
# Two tenants of config/gateway.json: A (tenant-a) floods, B (tenant-b) is the bystander whose accepted rate and p99
# (end of DATA -> 250) are compared with a run of B alone on the same warm gateway. In --mode plain a tenant is matched
# by its client network (tenant-a 127.0.0.1/32, tenant-b 127.0.0.2/32), so each client binds its tenant's address; in
# --mode auth each tenant has its own token (and still its own address, so the per-IP limit is per tenant either way).
# Each client is its own smtp-loadgen process, so every count (250s, 4xx refusals by code, latencies) is per tenant.
fair_tenants=(tenant-a tenant-b)
declare -A fair_token=()
fair_conf_get() { jq -r --arg t "$2" "$3" "$1/conf/gateway.json"; }   # DIR TENANT FILTER
# fair_config DIR SINK_PORT LIMITS_A LIMITS_B: the bench config plus Tenants:<id>:Limits for A and B (JSON objects).
fair_config() {
    local dir="$1" per_ip=$(( (a_conns > sign_a_conns ? a_conns : sign_a_conns) + b_conns + 10 ))
    gw_config "$dir" "$2"
    jq --argjson la "$3" --argjson lb "$4" --argjson pip "$per_ip" '
        .Tenants["tenant-a"].Limits = ((.Tenants["tenant-a"].Limits // {}) + $la)
        | .Tenants["tenant-b"].Limits = ((.Tenants["tenant-b"].Limits // {}) + $lb)
        | .Gateway.Limits.MaxConnectionsPerIp = ([.Gateway.Limits.MaxConnectionsPerIp // 50, $pip] | max)' \
        "$dir/conf/gateway.json" >"$dir/conf/g.tmp" && mv "$dir/conf/g.tmp" "$dir/conf/gateway.json"
    local t
    for t in "${fair_tenants[@]}"; do
        [[ -n "$(fair_conf_get "$dir" "$t" '.Tenants[$t].Networks[]? | select(test("^[0-9.]+/"))' | head -1)" ]] \
            || die "fairness: tenant $t has no IPv4 network in config/gateway.json"
        smtpgw hsm init-token --config "$dir/conf/gateway.json" --tenant "$t" >"$dir/init-token-$t.log" 2>&1 \
            || die "smtpgw hsm init-token ($t) failed: $(tail -3 "$dir/init-token-$t.log")"
        [[ "$mode" == auth ]] || continue
        fair_token[$t]=$(smtpgw token mint --config "$dir/conf/gateway.json" --tenant "$t" --ttl 1h --description bench 2>"$dir/mint-$t.err") \
            || die "smtpgw token mint ($t) failed: $(cat "$dir/mint-$t.err")"
    done
}
# fair_args DIR TENANT: the tenant's loadgen flags, one a line (port, source address, sender in its domain, auth).
fair_args() {
    local dir="$1" t="$2"
    printf '%s\n' --port "$(gw_port_for_mode)" --size "$size" --to "$rcpt" \
        --source "$(fair_conf_get "$dir" "$t" '.Tenants[$t].Networks[] | select(test("^[0-9.]+/")) | sub("/.*"; "")' | head -1)" \
        --from "sender@$(fair_conf_get "$dir" "$t" '.Tenants[$t].Domains[0]')"
    if [[ "$mode" == auth ]]; then printf '%s\n' --starttls --auth-user "$t" --auth-pass "${fair_token[$t]}"; fi
}
# fair_probe_signing DIR: one message of each tenant into a dumping sink must carry its own domain's signature.
fair_probe_signing() {
    local dir="$1" t i files=0 a_args=() b_args=()
    dump_sink_start fairness-signing
    jq --argjson p "$dump_port" '.Gateway.Delivery.Smarthost.Port = $p' "$dir/conf/gateway.json" >"$dir/conf/g.tmp" && mv "$dir/conf/g.tmp" "$dir/conf/gateway.json"
    gw_start "$dir"
    for t in "${fair_tenants[@]}"; do
        mapfile -t a_args < <(fair_args "$dir" "$t")
        loadgen run "${a_args[@]}" --connections 1 --messages 1 >"$dump_dir/probe-$t.json" 2>&1 || true
    done
    for i in $(seq 1 150); do
        files=$(grep -l '^DKIM-Signature:' "$dump_dir"/m.* 2>/dev/null | wc -l)
        ((files >= 2)) && break
        sleep 0.1
    done
    stop_pid "$gw_pid"; stop_pid "$dump_pid"
    for t in "${fair_tenants[@]}"; do
        grep -lq "d=$(fair_conf_get "$dir" "$t" '.Tenants[$t].Domains[0]')" "$dump_dir"/m.* 2>/dev/null \
            || { say "fairness_signing: the probe message of $t was not signed for its domain; see $dump_dir"; return 1; }
    done
}
# fair_b DIR OUT: tenant B paced at --b-rate for --duration seconds → DIR/OUT.json
fair_b() {
    local dir="$1" out="$2"
    loadgen run "${b_args[@]}" --connections "$b_conns" --per-conn "$per_conn" --rate "$b_rate" \
        --messages $((b_rate * duration)) --max-seconds "$duration" --label "B $out" \
        --out "$dir/$out.json" >"$dir/$out.out" 2>"$dir/$out.err" || true
    [[ -s "$dir/$out.json" ]] || { failed=1; die "fairness: tenant B's load generator failed: $(tail -3 "$dir/$out.err")"; }
}
# run_fairness NAME SIGNED: one fairness row (fairness or fairness_signing).
run_fairness() {
    local name="$1" signed="$2" dir="$work/$1" la lb a_rate a_conn a_limit_used a_share="" a_args=() b_args=() lead=2
    if ((signed)); then
        # Within its limits (the message limit is no help here): signing is what A's flood contends for.
        a_limit_used=$sign_a_limit a_conn=$sign_a_conns a_rate=0 a_share=$sign_a_share
        la=$(jq -n --argjson m "$a_limit_used" --argjson s "$sign_a_share" '{MessagesPerMinute: $m, MaxConcurrentSigning: $s}')
    else
        a_limit_used=$a_limit a_conn=$a_conns a_rate=$(fcalc "$flood_factor * $a_limit / 60")
        la=$(jq -n --argjson m "$a_limit_used" '{MessagesPerMinute: $m}')
    fi
    lb=$(jq -n --argjson m "$b_limit" '{MessagesPerMinute: $m}')
    if ((signed)) && ! smtpgw dkim --help >/dev/null 2>&1; then skip_row "$name" smtp-loadgen "skipped: signing not built"; return 0; fi
    start_sink "$name"
    fair_config "$dir" "$sink_port" "$la" "$lb"
    if ((signed)); then
        local t
        for t in "${fair_tenants[@]}"; do
            gw_dkim_setup "$dir" rsa2048 "$t" "$(fair_conf_get "$dir" "$t" '.Tenants[$t].Domains[0]')" \
                || { failed=1; skip_row "$name" smtp-loadgen "key setup failed"; stop_pid "$sink_pid"; return 0; }
        done
        fair_probe_signing "$dir" || failed=1
        jq --argjson p "$sink_port" '.Gateway.Delivery.Smarthost.Port = $p' "$dir/conf/gateway.json" >"$dir/conf/g.tmp" && mv "$dir/conf/g.tmp" "$dir/conf/gateway.json"
    fi
    gw_start "$dir"
    mapfile -t a_args < <(fair_args "$dir" tenant-a)
    mapfile -t b_args < <(fair_args "$dir" tenant-b)

    # Warm-up (not measured): both tenants, unpaced, drained.
    local sink0; sink0=$(sink_count)
    loadgen run "${a_args[@]}" --connections 10 --messages 300 --label "A warm-up" --out "$dir/warm-a.json" >/dev/null 2>&1 &
    local wa=$!; pids+=("$wa")
    loadgen run "${b_args[@]}" --connections "$b_conns" --messages 300 --label "B warm-up" --out "$dir/warm-b.json" >/dev/null 2>&1 || true
    wait "$wa" || true
    wait_drain $((sink0 + $(jq -s 'map(.count) | add // 0' "$dir"/warm-?.json 2>/dev/null || echo 0))) 5 60 || say "$name: warm-up did not drain"

    say "$name: B alone, $b_rate msg/s from $b_conns connections for ${duration}s"
    local cpu0 cpu1 cpu2; cpu0=$("$lib/procstat.pl" cpu "$gw_pid")
    fair_b "$dir" b-alone
    wait_drain "$(( $(jq .count "$dir/warm-a.json" 2>/dev/null || echo 0) + $(jq .count "$dir/warm-b.json" 2>/dev/null || echo 0) + $(jq .count "$dir/b-alone.json") ))" 5 60 \
        || say "$name: B's run did not drain"

    local a_total a_secs=$((duration + lead + 2))
    if ((signed)); then a_total=100000000; else a_total=$(awk -v r="$a_rate" -v s="$a_secs" 'BEGIN { print int(r * s) + 1 }'); fi
    local offered="$a_rate msg/s"; ((signed)) && offered="unpaced"
    say "$name: A floods ($offered offered, limit $a_limit_used/min${a_share:+, MaxConcurrentSigning $a_share}, $a_conn connections) while B sends again"
    cpu1=$("$lib/procstat.pl" cpu "$gw_pid")   # (B's drain included in the alone figure)
    loadgen run "${a_args[@]}" --connections "$a_conn" --per-conn 100 --rate "$a_rate" --messages "$a_total" \
        --max-seconds "$a_secs" --timeline --label "A flood" --out "$dir/a-flood.json" >"$dir/a-flood.out" 2>"$dir/a-flood.err" &
    local ap=$!; pids+=("$ap")
    sleep "$lead"
    fair_b "$dir" b-flood
    wait "$ap" || true
    cpu2=$("$lib/procstat.pl" cpu "$gw_pid")
    [[ -s "$dir/a-flood.json" ]] || { failed=1; die "$name: tenant A's load generator failed: $(tail -3 "$dir/a-flood.err")"; }
    # B alone again once A's backlog is delivered: the baseline is the mean of the runs before and after the flood, so
    # that drift in this shared machine's load shows as a difference between the two instead of as a ratio.
    wait_drain "$(jq -s 'map(.count) | add' "$dir"/warm-?.json "$dir/b-alone.json" "$dir/b-flood.json" "$dir/a-flood.json")" 10 180 \
        || say "$name: A's backlog did not drain ($(sink_count) at the sink)"
    say "$name: B alone again"
    fair_b "$dir" b-alone-after
    stop_pid "$gw_pid"; stop_pid "$sink_pid"

    add_row "$(jq -n --arg name "$name" --slurpfile x "$dir/b-alone.json" --slurpfile y "$dir/b-flood.json" \
        --slurpfile x2 "$dir/b-alone-after.json" \
        --slurpfile z "$dir/a-flood.json" --argjson signed "$signed" --argjson alim "$a_limit_used" --argjson blim "$b_limit" \
        --argjson arate "$a_rate" --argjson factor "$flood_factor" --argjson brate "$b_rate" --argjson dur "$duration" \
        --arg ashare "$a_share" --argjson c0 "$cpu0" --argjson c1 "$cpu1" --argjson c2 "$cpu2" --arg mode "$mode" '
        def r3: . * 1000 | round / 1000;
        def rate($l): if $l.elapsed_s > 0 then ($l.count / $l.elapsed_s * 10 | round / 10) else 0 end;
        def side($l): {rate: rate($l), acknowledged: $l.count, attempted: $l.attempted, refused: $l.refused,
                       refused_by_code: $l.refused_by_code, errors: $l.errors, error_kinds: $l.error_kinds,
                       connect_failures: $l.connect_failures, seconds: $l.elapsed_s, latency_ms: $l.latency_ms};
        $x[0] as $before | $x2[0] as $after | $y[0] as $flood | $z[0] as $a
        | ((rate($before) + rate($after)) / 2) as $rate_alone
        | (($before.latency_ms.p99 + $after.latency_ms.p99) / 2) as $p99_alone
        | {name: $name, client: "smtp-loadgen: tenant A flood + tenant B paced, separate processes", mode: $mode,
           b_rate_ratio: (if $rate_alone > 0 then (rate($flood) / $rate_alone | r3) else null end),
           b_p99_ratio: (if $p99_alone > 0 then ($flood.latency_ms.p99 / $p99_alone | r3) else null end),
           b_rate_alone: ($rate_alone * 10 | round / 10), b_rate_under_flood: rate($flood),
           b_p99_ms_alone: ($p99_alone | r3), b_p99_ms_under_flood: $flood.latency_ms.p99,
           b: {limits: {MessagesPerMinute: $blim}, paced_rate: $brate, connections: $before.connections,
               alone_before: side($before), under_flood: side($flood), alone_after: side($after)},
           a: {limits: ({MessagesPerMinute: $alim} + (if $ashare != "" then {MaxConcurrentSigning: ($ashare | tonumber)} else {} end)),
               flood: (if $signed == 1 then "unpaced, within its message limit" else "\($factor) x MessagesPerMinute" end),
               paced_rate: (if $arate > 0 then $arate else null end), connections: $a.connections,
               offered_rate: (if $a.elapsed_s > 0 then ($a.attempted / $a.elapsed_s * 10 | round / 10) else 0 end),
               accepted_rate: rate($a), attempted: $a.attempted, acknowledged: $a.count,
               refused: $a.refused, refused_by_code: $a.refused_by_code, refused_at: $a.refused_at,
               errors: $a.errors, error_kinds: $a.error_kinds, connect_failures: $a.connect_failures,
               connect_failure_kinds: $a.connect_failure_kinds, seconds: $a.elapsed_s, latency_ms: $a.latency_ms,
               accepted_per_second: $a.acks_per_second},
           signed: ($signed == 1), duration_s: $dur,
           gateway_cpu_s: {b_alone: ($c1 - $c0 | r3), flood: ($c2 - $c1 | r3)},
           limits_enforced: (if $signed == 1 then null else ($a.refused > 0) end),
           target: "b_rate_ratio >= 0.9 and b_p99_ratio <= 1.1 (issue 12: within 10% of B alone)",
           verdict: (if $signed == 0 and $a.refused == 0 then "FAIL (A was never refused: MessagesPerMinute is not enforced by this build)"
                     elif ($rate_alone > 0 and $p99_alone > 0 and rate($flood) / $rate_alone >= 0.9
                           and $flood.latency_ms.p99 / $p99_alone <= 1.1) then "PASS" else "FAIL" end)}')"
    say "$name: $(jq -r '"B \(.b_rate_alone) -> \(.b_rate_under_flood) msg/s (ratio \(.b_rate_ratio)), p99 \(.b_p99_ms_alone) -> \(.b_p99_ms_under_flood) ms (ratio \(.b_p99_ratio)); A offered \(.a.offered_rate)/s, accepted \(.a.accepted_rate)/s, refused \(.a.refused_by_code | tostring): \(.verdict)"' "$rows_dir/$(printf %02d $row_seq).json")"
}

# --- Slow clients ----------------------------------------------------------------------------------------------------
# Tenant A's normal client at full speed for --duration s: alone, with N slow sessions open, alone again. The slow
# sessions come from 127.0.1.1 up, 40 per address (under the gateway's default MaxConnectionsPerIp of 50, which stays):
# none is in a tenant network, so they are unauthenticated inbound sessions (the data-phase ones write to a tenant domain).
slow_normal() {   # DIR OUT
    local dir="$1" out="$2" client; client=$(gw_client_args)
    # shellcheck disable=SC2086
    loadgen run --port "$(gw_port_for_mode)" "${loadgen_args[@]}" $client --messages 100000000 --max-seconds "$duration" \
        --label "normal $out" --out "$dir/$out.json" >"$dir/$out.out" 2>"$dir/$out.err" || true
    [[ -s "$dir/$out.json" ]] || { failed=1; die "slow clients: the normal client failed: $(tail -3 "$dir/$out.err")"; }
    say "slow clients: normal client ($out): $(jq -r '"\(.count) acked in \(.elapsed_s) s, p99 \(.latency_ms.p99) ms"' "$dir/$out.json")"
}
run_slow_clients() {
    local need=$((slow_count * 2 + 1000))
    if (( $(ulimit -n) < need )); then ulimit -n "$need" 2>/dev/null || say "could not raise ulimit -n to $need (now $(ulimit -n))"; fi
    start_sink slow-clients
    local dir="$work/smtpgw-slow" per_ip=40
    gw_config "$dir" "$sink_port"; gw_mint "$dir"
    if ((slow_timeout > 0)); then
        local t; t=$(printf '%02d:%02d:%02d' $((slow_timeout / 3600)) $((slow_timeout % 3600 / 60)) $((slow_timeout % 60)))
        jq --arg t "$t" '.Gateway.Limits.CommandTimeout = $t | .Gateway.Limits.DataTimeout = $t' "$dir/conf/gateway.json" >"$dir/conf/g.tmp" \
            && mv "$dir/conf/g.tmp" "$dir/conf/gateway.json"
    fi
    local max_ip; max_ip=$(jq '.Gateway.Limits.MaxConnectionsPerIp // 50' "$dir/conf/gateway.json")
    ((max_ip < per_ip)) && per_ip=$max_ip
    local sources=$(( (slow_count + per_ip - 1) / per_ip ))
    gw_start "$dir"
    local sink0; sink0=$(sink_count)
    local client; client=$(gw_client_args)
    # shellcheck disable=SC2086
    loadgen run --port "$(gw_port_for_mode)" "${loadgen_args[@]}" $client --messages 1000 --label warm-up --out "$dir/warm.json" >/dev/null 2>&1 || true
    wait_drain $((sink0 + $(jq .count "$dir/warm.json" 2>/dev/null || echo 0))) 5 60 || say "slow clients: warm-up did not drain"

    slow_normal "$dir" alone-before
    local rss0; rss0=$("$lib/procstat.pl" rss "$gw_pid")
    say "slow clients: opening $slow_count sessions (phase $slow_phase, 1 byte every ${slow_interval}s) from $sources source address(es) from 127.0.1.1; ulimit -n $(ulimit -n)"
    loadgen slow --port "$gw_relay_port" --count "$slow_count" --interval "$slow_interval" --duration "$slow_hold" \
        --phase "$slow_phase" --source 127.0.1.1 --source-count "$sources" --to "$rcpt_inbound" --ready "$dir/slow-ready" \
        --out "$dir/slow.json" >"$dir/slow.out" 2>"$dir/slow.err" &
    local sp=$!; pids+=("$sp")
    local i; for i in $(seq 1 1200); do [[ -s "$dir/slow-ready" ]] && break; kill -0 "$sp" 2>/dev/null || break; sleep 0.1; done
    say "slow clients: $(cat "$dir/slow-ready" 2>/dev/null || echo 0) slow sessions open; the normal client again"
    slow_normal "$dir" with-slow
    local rss1; rss1=$("$lib/procstat.pl" rss "$gw_pid")
    wait "$sp" || true
    [[ -s "$dir/slow.json" ]] || { failed=1; die "slow clients: the slow client failed: $(tail -5 "$dir/slow.err")"; }
    slow_normal "$dir" alone-after
    local hwm; hwm=$("$lib/procstat.pl" hwm "$gw_pid")
    stop_pid "$gw_pid"; stop_pid "$sink_pid"

    local limits; limits=$(jq -c '.Gateway.Limits | {CommandTimeout, DataTimeout, MinDataRate, MaxConnectionsPerIp}' "$dir/conf/gateway.json")
    add_row "$(jq -n --slurpfile b "$dir/alone-before.json" --slurpfile w "$dir/with-slow.json" --slurpfile a "$dir/alone-after.json" \
        --slurpfile s "$dir/slow.json" --argjson limits "$limits" --arg phase "$slow_phase" --arg mode "$mode" \
        --argjson rss0 "$rss0" --argjson rss1 "$rss1" --argjson hwm "$hwm" --argjson dur "$duration" \
        --arg settings "$(printf '%s\n' "${gw_settings[@]}")" '
        def rate($l): if $l.elapsed_s > 0 then ($l.count / $l.elapsed_s * 10 | round / 10) else 0 end;
        def side($l): {rate: rate($l), acknowledged: $l.count, refused: $l.refused, refused_by_code: $l.refused_by_code,
                       errors: $l.errors, error_kinds: $l.error_kinds, seconds: $l.elapsed_s, latency_ms: $l.latency_ms};
        $b[0] as $before | $w[0] as $with | $a[0] as $after | $s[0] as $slow
        | ((rate($before) + rate($after)) / 2) as $alone
        | {name: "slow_clients", client: "smtp-loadgen run (tenant A, full speed) + smtp-loadgen slow", mode: $mode,
           normal_rate_ratio: (if $alone > 0 then (rate($with) / $alone * 1000 | round / 1000) else null end),
           normal_rate_alone: ($alone * 10 | round / 10), normal_rate_with_slow: rate($with),
           normal_p99_ratio: (if ($before.latency_ms.p99 + $after.latency_ms.p99) > 0
                              then ($with.latency_ms.p99 / (($before.latency_ms.p99 + $after.latency_ms.p99) / 2) * 1000 | round / 1000) else null end),
           normal: {connections: $with.connections, duration_s: $dur, alone_before: side($before), with_slow: side($with), alone_after: side($after)},
           slow: {requested: $slow.requested, opened: $slow.opened, open_failures: $slow.open_failures,
                  open_failure_kinds: $slow.open_failure_kinds, phase: $phase, interval_s: $slow.interval_s,
                  hold_s: $slow.duration_s, source_addresses: $slow.source_addresses,
                  closed_by_gateway: $slow.closed_by_server, closing_replies: $slow.closing_replies,
                  closed_after_s: $slow.closed_after_s, still_open_at_end: $slow.still_open_at_end,
                  by_phase: $slow.by_phase},
           gateway_limits: $limits, gw_set: ($settings | split("\n") | map(select(. != ""))),
           rss_mb: {before: ($rss0 / 1024 | round), with_slow: ($rss1 / 1024 | round), peak_vmhwm: ($hwm / 1024 | round)},
           target: "normal_rate_ratio >= 0.9 and every slow session closed by the gateway (at its limit) within the hold",
           verdict: (if $alone > 0 and rate($with) / $alone >= 0.9 and $slow.opened > 0 and $slow.still_open_at_end == 0
                     then "PASS" else "FAIL" end)}')"
    say "slow clients: $(jq -r '"normal \(.normal_rate_alone) -> \(.normal_rate_with_slow) msg/s (ratio \(.normal_rate_ratio)); slow: \(.slow.opened) opened, \(.slow.closed_by_gateway) closed by the gateway \(.slow.closing_replies | tostring), \(.slow.still_open_at_end) still open: \(.verdict)"' "$rows_dir/$(printf %02d $row_seq).json")"
}

# latest.json carries the issue-12 rows (fairness, fairness_signing, slow_clients) beside the default run's rows: a
# --fairness or --slow-clients run replaces its own rows there (each naming the run it came from) and leaves the rest.
merge_into_latest() {
    local latest="$here/results/latest.json" stamped="$here/results/$stamp.json"
    # latest.json is the gateway as shipped: a comparison (--gw-sched other) or a changed setting (--gw-set) stays in
    # its own file.
    if [[ "$gw_sched" != batch || ${#gw_settings[@]} -gt 0 ]]; then
        say "rows not merged into perf/results/latest.json: --gw-sched $gw_sched${gw_settings[*]:+, --gw-set ${gw_settings[*]}}"
        return 0
    fi
    [[ -s "$latest" ]] || { cp "$stamped" "$latest"; return 0; }
    jq --slurpfile new "$stamped" --arg from "$stamp.json" '
        ($new[0].rows | map(.name)) as $names
        | .rows = ([.rows[] | select(.name as $n | $names | index($n) | not)]
                   + ($new[0].rows | map(. + {from_run: $from, command: $new[0].command, machine: $new[0].machine,
                                              scenario: $new[0].scenario})))
        ' "$latest" >"$latest.tmp" && mv "$latest.tmp" "$latest"
    say "rows $(jq -r '[.rows[].name] | join(", ")' "$stamped") merged into perf/results/latest.json"
}
# <<< FAIRNESS AND SLOW CLIENTS <<<
# ======================================================================================================================

# --- Profile: perf record on the loaded gateway --------------------------------------------------------------------
profile_gateway() {
    local dir="$1" client="$2"
    command -v perf >/dev/null 2>&1 || { say "profile: perf not installed"; return 0; }
    say "profile: second load on the same gateway, perf record -g for ${profile_secs}s"
    # shellcheck disable=SC2086
    loadgen run --port "$(gw_port_for_mode)" "${loadgen_args[@]}" $client --messages 1000000 --max-seconds $((profile_secs + 5)) >"$dir/profile-load.json" 2>&1 &
    local lgp=$!; pids+=("$lgp")
    sleep 2
    perf record -F 499 -g -p "$gw_pid" -o "$dir/perf.data" -- sleep "$profile_secs" >"$dir/perf-record.log" 2>&1 || true
    wait "$lgp" 2>/dev/null || true
    {
        echo "# perf record -F 499 -g on smtpgw (pid $gw_pid) for ${profile_secs}s under load: $(jq -c '{count, throughput, errors}' "$dir/profile-load.json" 2>/dev/null)"
        echo "## by object"
        perf report -i "$dir/perf.data" --no-children --sort dso -g none --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | head -15
        echo "## kernel time by system call (the call chain's syscall entry; [other] = user space and interrupts)"
        perf report -i "$dir/perf.data" --no-children --sort parent --parent '^__x64_sys_|^__do_sys_|^__se_sys_' -g none --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | head -20
        echo "## top symbols (self)"
        perf report -i "$dir/perf.data" --no-children --sort dso,sym -g none --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | head -60
        echo "## inclusive (with children): gateway, MimeKit/MailKit, file and GC frames"
        perf report -i "$dir/perf.data" --children --sort sym -g none --stdio 2>/dev/null \
            | grep -E 'SmtpGateway|MimeKit|MailKit|System\.IO\.File|SafeFileHandle|Logging|GarbageCollect|gc_heap|Ssl|Crypto' | head -60
    } >"$dir/perf-top.txt" || true
    cp "/tmp/perf-$gw_pid.map" "$dir/" 2>/dev/null || true   # (perf report needs it under /tmp/ again to resolve)
    mkdir -p "$here/results"
    cp "$dir/perf-top.txt" "$here/results/profile-$stamp.txt" 2>/dev/null || true
    say "profile: top symbols in perf/results/profile-$stamp.txt"
}

# --- Kill test ----------------------------------------------------------------------------------------------------
run_kill_test() {
    start_sink kill
    local dir="$work/smtpgw-kill"
    gw_config "$dir" "$sink_port"; gw_mint "$dir"; gw_start "$dir"
    local client; client=$(gw_client_args)
    say "kill test: $messages messages; SIGKILL the gateway after a third is acknowledged, restart on the same data directory"
    # shellcheck disable=SC2086
    loadgen run --port "$(gw_port_for_mode)" "${loadgen_args[@]}" $client --messages "$messages" --progress "$dir/progress" --max-seconds 300 \
        --out "$dir/loadgen.json" >"$dir/loadgen.out" 2>"$dir/loadgen.err" &
    local lgp=$!; pids+=("$lgp")
    local third=$((messages / 3)) acked=0
    while kill -0 "$lgp" 2>/dev/null; do
        acked=$(awk '{print $1}' "$dir/progress" 2>/dev/null || echo 0)
        ((acked >= third)) && break
        sleep 0.05
    done
    kill -KILL "$gw_pid"; wait "$gw_pid" 2>/dev/null || true
    local killed_at=$acked
    say "kill test: SIGKILL after ~$killed_at acknowledged; sink had $(sink_count); restarting"
    sleep 1
    gw_start "$dir"
    wait "$lgp" || true
    acked=$(jq .count "$dir/loadgen.json")
    # Drain: the sink stops moving and the spool queue is empty.
    local i q
    for i in $(seq 1 240); do
        q=$(find "$dir/data/spool/queue" -type f 2>/dev/null | wc -l)
        (( q == 0 && $(sink_count) >= acked )) && break
        sleep 0.5
    done
    sleep 2
    local received; received=$(sink_count)
    local verdict=PASS; ((received >= acked)) || { verdict=FAIL; failed=1; }
    add_row "$(jq -n --argjson acked "$acked" --argjson received "$received" --argjson killed "$killed_at" \
        --argjson q "$q" --arg verdict "$verdict" --slurpfile lg "$dir/loadgen.json" '
        {name: "smtpgw kill test", client: "smtp-loadgen", acknowledged: $acked, received_at_sink: $received,
         killed_after_acks: $killed, duplicates_or_unacked_delivered: ($received - $acked), spool_queue_left: $q,
         errors: $lg[0].errors, error_kinds: $lg[0].error_kinds, connect_failures: $lg[0].connect_failures,
         verdict: $verdict}')"
    stop_pid "$gw_pid"; stop_pid "$sink_pid"
}

# --- Idle connections -------------------------------------------------------------------------------------------------
run_idle() {
    ulimit -n 1048576 2>/dev/null || ulimit -n 65536 2>/dev/null || say "could not raise ulimit -n (now $(ulimit -n))"
    start_sink idle
    local dir="$work/smtpgw-idle"
    gw_config "$dir" "$sink_port"
    # Every idle connection is a session of the relay's tenant too (Gateway:TenantLimits:MaxSessions, 1,000 by default
    # since issue 13, answers 421 in place of the banner beyond it): raised with the connection caps.
    gw_start "$dir" SMTPGW__Gateway__Limits__MaxConnectionsPerIp=$((idle_count + 100)) SMTPGW__Gateway__Limits__MaxConnections=$((idle_count + 100)) \
        SMTPGW__Gateway__TenantLimits__MaxSessions=$((idle_count + 100))
    sleep 2
    local base; base=$("$lib/procstat.pl" rss "$gw_pid")
    local sources=$(( (idle_count + 19999) / 20000 ))
    say "idle: opening $idle_count connections to the relay port from $sources source address(es); ulimit -n $(ulimit -n)"
    loadgen idle --port "$gw_relay_port" --count "$idle_count" --hold 15 --source-count "$sources" --ready "$dir/ready" \
        --out "$dir/idle.json" >"$dir/idle.out" 2>"$dir/idle.err" &
    local lgp=$!; pids+=("$lgp")
    local i; for i in $(seq 1 1200); do [[ -s "$dir/ready" ]] && break; kill -0 "$lgp" 2>/dev/null || break; sleep 0.1; done
    sleep 2
    local held_rss; held_rss=$("$lib/procstat.pl" rss "$gw_pid")
    wait "$lgp" || true
    local hwm; hwm=$("$lib/procstat.pl" hwm "$gw_pid")
    [[ -s "$dir/idle.json" ]] || { failed=1; die "idle: load generator failed: $(tail -5 "$dir/idle.err")"; }
    add_row "$(jq -n --slurpfile r "$dir/idle.json" --argjson base "$base" --argjson held "$held_rss" --argjson hwm "$hwm" '
        $r[0] as $x
        | {name: "smtpgw idle", client: "smtp-loadgen idle", requested: $x.requested, opened: $x.opened,
           alive_after_hold: $x.alive_after_hold, failed: $x.failed, failure_kinds: $x.failure_kinds,
           open_seconds: $x.open_seconds,
           rss_mb: {before: ($base / 1024 * 10 | round / 10), held: ($held / 1024 * 10 | round / 10),
                    peak_vmhwm: ($hwm / 1024 * 10 | round / 10)},
           kb_per_connection: (if $x.opened > 0 then (($held - $base) / $x.opened * 10 | round / 10) else null end),
           target: "peak RSS < 500 MB at 10,000 connections",
           verdict: (if $x.opened >= 10000 and $hwm < 512000 then "PASS" elif $x.opened < 10000 then "n/a (< 10,000 opened)" else "FAIL" end)}')"
    stop_pid "$gw_pid"; stop_pid "$sink_pid"
}

# --- Run ----------------------------------------------------------------------------------------------------------------
stamp=$(date -u +%Y%m%dT%H%M%SZ)
t_start=$(date +%s)
loadavg_start=$(cut -d' ' -f1-3 /proc/loadavg)
if ((kill_test)); then
    run_kill_test
elif ((idle)); then
    run_idle
elif ((fairness)); then
    want fairness && run_fairness fairness 0
    want fairness-signing && run_fairness fairness_signing 1
elif ((slow_clients)); then
    run_slow_clients
else
    want ceiling && row_ceiling
    want postfix && row_postfix
    want postfix-dkim && row_postfix_dkim
    if [[ -z "$gw_cores" ]]; then
        want smtpgw && row_smtpgw
        want smtpgw-dkim && rows_smtpgw_dkim
    else
        for n in "${core_counts[@]}"; do want smtpgw && row_smtpgw "$n"; done
        for n in "${core_counts[@]}"; do want smtpgw-dkim && rows_smtpgw_dkim "$n"; done
    fi
    want halfpeak && row_halfpeak
fi
t_total=$(( $(date +%s) - t_start ))

# --- Report ----------------------------------------------------------------------------------------------------------
fs_type=$(df -T "$work" | awk 'NR == 2 {print $2}')
[[ "$fs_type" == tmpfs ]] && say "warning: $work is on tmpfs: fsync costs nothing there; set BENCH_TMP to a disk"
gw_commit() {
    if [[ "$(git -C "$gw_root" rev-parse --show-toplevel 2>/dev/null)" == "$gw_root" ]]; then
        echo "$(git -C "$gw_root" rev-parse --short HEAD)$(git -C "$gw_root" diff --quiet HEAD -- src 2>/dev/null || echo '+uncommitted-src')"
    else
        cat "$gw_root/.commit" 2>/dev/null || echo "?"
    fi
}
machine=$(jq -n --arg cpu "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" \
    --arg cores "$(nproc)" --arg mem "$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)" \
    --arg kernel "$(uname -r)" --arg fs "$fs_type" --arg disk "$(df -h "$work" | awk 'NR == 2 {print $1}')" \
    --arg dotnet "$(dotnet --version 2>/dev/null || echo '?')" \
    --arg postfix "$(postconf -d -h mail_version 2>/dev/null || echo '?')" \
    --arg opendkim "$(opendkim -V 2>/dev/null | head -1 | awk '{print $NF}')" \
    --arg commit "$(gw_commit)" --arg la0 "$loadavg_start" --arg la1 "$(cut -d' ' -f1-3 /proc/loadavg)" \
    '{cpu: $cpu, cores: ($cores | tonumber), memory: $mem, kernel: $kernel, work_fs: $fs, work_device: $disk,
      dotnet_sdk: $dotnet, postfix: $postfix, opendkim: $opendkim, smtpgw_commit: $commit,
      loadavg_before: $la0, loadavg_after: $la1}')
result=$(jq -s --argjson machine "$machine" --arg stamp "$stamp" --arg cmd "perf/bench.sh ${ORIG_ARGS:-}" \
    --arg size "$size" --argjson sessions "$sessions" --argjson per_conn "$per_conn" --arg mode "$mode" \
    --argjson messages "$messages" --argjson total "$t_total" \
    --arg gwc "$(IFS=,; echo "${core_counts[*]}")" --arg usable "$(cpulist_join "${cpus_usable[@]}")" \
    --arg spool_sync "$(spool_sync_mode)" --arg gw_sched "$gw_sched" '
    (map(select(.name == "ceiling")) | first | .rate // null) as $ceil
    | (map(select(.name == "postfix")) | first | .rate // null) as $pf
    | (map(select(.name == "postfix+opendkim-rsa2048")) | first | .rate // null) as $pfd
    | {timestamp: $stamp, command: $cmd, machine: $machine,
       scenario: ({size: $size, sessions: $sessions, per_conn: $per_conn, mode: $mode, messages_per_system: $messages,
                   spool_sync: $spool_sync, gw_sched: $gw_sched}
                  + (if $gwc == "" then {} else {gw_cores: ($gwc | split(",") | map(tonumber)), cpus_usable: $usable} end)),
       total_seconds: $total,
       rows: map(. + (if .rate == null or (.name | test("@")) then {} else
            {vs_ceiling: (if $ceil then (.rate / $ceil * 1000 | round / 1000) else null end),
             vs_postfix: (if (.name | test("dkim")) then (if $pfd then (.rate / $pfd * 100 | round / 100) else null end)
                          elif (.name | startswith("ceiling")) then null
                          else (if $pf then (.rate / $pf * 100 | round / 100) else null end) end),
             vs_postfix_basis: (if (.name | test("dkim")) then "postfix+opendkim-rsa2048" else "postfix" end)} end))}
    # --gw-cores: each pinned row against the same row at the smallest core count.
    | .rows |= (. as $all | map(
        if .cores == null or .rate == null then . else
          (.name | sub("@[0-9]+c$"; "")) as $base
          | ([$all[] | select(.cores != null and .rate != null and (.name | sub("@[0-9]+c$"; "")) == $base)] | min_by(.cores)) as $min
          | . + {min_cores: $min.cores,
                 cpu_ms_per_msg_vs_min_cores: (if (.cpu_ms_per_msg // 0) > 0 and ($min.cpu_ms_per_msg // 0) > 0
                     then (.cpu_ms_per_msg / $min.cpu_ms_per_msg * 1000 | round / 1000) else null end),
                 rate_vs_min_cores: (if $min.rate > 0 then (.rate / $min.rate * 1000 | round / 1000) else null end)}
        end))
    ' "$rows_dir"/*.json)
mkdir -p "$here/results"
printf '%s\n' "$result" >"$here/results/$stamp.json"
if ((fairness || slow_clients)); then merge_into_latest; fi

echo
echo "SmtpGateway vs Postfix — $(jq -r '.machine | "\(.cpu), \(.cores) cores, \(.memory), \(.kernel), work dir on \(.work_fs)"' <<<"$result")"
echo "scenario: $size messages, $sessions sessions, $per_conn per connection, mode $mode, $messages messages per system; $t_total s in all"
echo "smtpgw $(jq -r '.machine | "\(.smtpgw_commit); Postfix \(.postfix), OpenDKIM \(.opendkim); load average before \(.loadavg_before), after \(.loadavg_after)"' <<<"$result")"
echo
jq -e '[.rows[] | select(.rate != null or .skipped != null)] | length > 0' <<<"$result" >/dev/null && jq -r '.rows[] | select(.skipped != null or .rate != null) |
    if .skipped != null then [.name, .client, .skipped, "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", "-"] else
    [.name, .client, (.received_at_sink | tostring) + "/" + ((.acknowledged // "-") | tostring),
     (.rate | tostring), (.latency_ms.p50 // "-" | tostring), (.latency_ms.p99 // "-" | tostring),
     (.cpu_s.server // "-" | tostring), (.cpu_ms_per_msg // "-" | tostring),
     (if .alloc_bytes_per_msg != null then (.alloc_bytes_per_msg / 1024 * 10 | round / 10 | tostring) else "-" end),
     (.ctxsw_per_msg // "-" | tostring),
     (.hsm_cpu_ms_per_msg // "-" | tostring),
     ((.rss_mb.server // "-") | tostring) + (if .rss_mb.milter > 0 then "+" + (.rss_mb.milter | tostring) else "" end),
     (.vs_postfix // "-" | tostring), (.vs_ceiling // "-" | tostring)] end | @tsv' <<<"$result" \
  | { printf 'row\tclient\tsink/acked\tmsg/s\tp50ms\tp99ms\tsrvCPUs\tCPUms/msg\tallocKB/msg\tctxsw/msg\tHSMms/msg\tRSS MB\tvsPostfix\tvsCeiling\n'; cat; } \
  | column -t -s $'\t'
if [[ -n "$gw_cores" ]]; then
    echo
    echo "gateway by core count (--gw-cores $(IFS=,; echo "${core_counts[*]}"); usable CPUs $(cpulist_join "${cpus_usable[@]}")): ratios against the same row at the smallest core count"
    jq -r '.rows[] | select(.cores != null and .rate != null) |
        [.name, (.cores | tostring), .gw_cpus, .client_cpus + (if .shared_cores then " (shared)" else "" end),
         (.rate | tostring), (.cpu_ms_per_msg // "-" | tostring),
         (if .alloc_bytes_per_msg != null then (.alloc_bytes_per_msg / 1024 * 10 | round / 10 | tostring) else "-" end),
         (.cpu_ms_per_msg_vs_min_cores // "-" | tostring), (.rate_vs_min_cores // "-" | tostring)] | @tsv' <<<"$result" \
      | { printf 'row\tcores\tgateway CPUs\tloadgen+sink CPUs\tmsg/s\tCPUms/msg\tallocKB/msg\tCPUms/msg vs min\tmsg/s vs min\n'; cat; } \
      | column -t -s $'\t'
    if jq -e '[.rows[] | select(.shared_cores == true)] | length > 0' <<<"$result" >/dev/null; then
        echo "(shared): no CPU left for the load generator and smtp-sink: they run on the gateway's CPUs too."
    fi
fi
jq -r '.rows[] | select(.name == "smtpgw kill test") |
    "kill test: acknowledged \(.acknowledged), received at sink \(.received_at_sink) (\(.duplicates_or_unacked_delivered) more than acknowledged), SIGKILL after ~\(.killed_after_acks) acks, spool left \(.spool_queue_left): \(.verdict)"' <<<"$result"
jq -r '.rows[] | select(.name == "smtpgw idle") |
    "idle: \(.opened)/\(.requested) connections open (\(.alive_after_hold) answered NOOP after the hold), RSS before \(.rss_mb.before) MB, held \(.rss_mb.held) MB, VmHWM \(.rss_mb.peak_vmhwm) MB, \(.kb_per_connection) kB/conn: \(.verdict)"' <<<"$result"
jq -r '.rows[] | select(.name == "fairness" or .name == "fairness_signing") | select(.skipped == null) |
    "\(.name): B \(.b_rate_alone) msg/s alone, \(.b_rate_under_flood) under A'"'"'s flood (b_rate_ratio \(.b_rate_ratio)); p99 \(.b_p99_ms_alone) -> \(.b_p99_ms_under_flood) ms (b_p99_ratio \(.b_p99_ratio)); A offered \(.a.offered_rate)/s, accepted \(.a.accepted_rate)/s, refused \(.a.refused_by_code | tostring): \(.verdict)"' <<<"$result"
jq -r '.rows[] | select(.name == "slow_clients") |
    "slow_clients: normal client \(.normal_rate_alone) msg/s alone, \(.normal_rate_with_slow) with \(.slow.opened) slow sessions (normal_rate_ratio \(.normal_rate_ratio)); gateway closed \(.slow.closed_by_gateway) \(.slow.closing_replies | tostring), still open at the end \(.slow.still_open_at_end): \(.verdict)"' <<<"$result"
# A refusal (4xx: a tenant limit, a full spool) is neither an error nor an acknowledgement: say so, or a row that
# acknowledged fewer messages than it sent reads as clean.
jq -r '.rows[] | select((.errors // 0) > 0 or (.connect_failures // 0) > 0 or ((.refused // 0) > 0 and .a == null))
    | select(.name != "smtpgw kill test") |
    "note: \(.name): \(.errors) errors \(.error_kinds // {} | tostring), \(.connect_failures // 0) connect failures, \(.refused // 0) refused \(.refused_by_code // {} | tostring)"' <<<"$result"
echo
echo "RSS: VmHWM for one-process servers; Postfix: peak of the Pss summed over its process tree (sampled 2/s; Pss splits shared pages), +OpenDKIM VmHWM."
echo "CPU: utime+stime of the server (Postfix: master's whole tree incl. exited children; + opendkim) during the row."
echo "allocKB/msg: gateway rows: KiB the gateway allocated during the row (dotnet_gc_heap_total_allocated_bytes_total on its /metrics) ÷ messages acknowledged."
echo "ctxsw/msg: gateway rows: context switches of the gateway's threads during the row ÷ messages at the sink."
echo "HSMms/msg: signed gateway rows: CPU of the signing threads inside C_SignInit+C_Sign (SoftHSM2 computes on the gateway's cores; part of CPUms/msg) ÷ messages at the sink."
echo "vsPostfix: signed rows against postfix+opendkim-rsa2048, others against postfix. vsCeiling: against smtp-source→smtp-sink."
echo "results: perf/results/$stamp.json"
((failed)) && exit 1 || exit 0
