#!/usr/bin/env bash
# perf/SmtpGateway.SignBench/compare.sh — the signing micro-benchmark before and after, in one run.
#
#   perf/SmtpGateway.SignBench/compare.sh [--base REV] [--runs N] [-- BENCH ARGS...]
#
# Builds this benchmark twice: against the gateway of REV (git archive, default HEAD: "before") and against the work
# tree ("after"); then runs the two alternately N times (default 3), so both see the same machine noise, and prints per
# case the median over the runs of each run's median thread-CPU µs/op, wall µs/op and allocated bytes/op.
# BENCH ARGS go to every run (e.g. --rounds 21 --ms 100 --only svc.).
set -euo pipefail
here="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)"
root="$(cd "$here/../.." && pwd)"
base=HEAD runs=3
while (($#)); do
    case "$1" in
        --base) base="$2"; shift 2 ;;
        --runs) runs="$2"; shift 2 ;;
        --) shift; break ;;
        *) echo "compare.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
work="$(mktemp -d /tmp/signbench-compare.XXXXXX)"
trap 'rm -rf "$work"' EXIT

mkdir -p "$work/before/perf"
git -C "$root" archive "$base" Directory.Build.props Directory.Packages.props src config | tar -x -C "$work/before"
mkdir -p "$work/before/perf/SmtpGateway.SignBench"
cp "$here/SmtpGateway.SignBench.csproj" "$here"/*.cs "$work/before/perf/SmtpGateway.SignBench/"
dotnet build -c Release -v q -o "$work/bin-before" "$work/before/perf/SmtpGateway.SignBench" >"$work/build-before.log" 2>&1 || { cat "$work/build-before.log"; exit 1; }
dotnet build -c Release -v q -o "$work/bin-after" "$here" >"$work/build-after.log" 2>&1 || { cat "$work/build-after.log"; exit 1; }

for ((i = 1; i <= runs; i++)); do
    for side in before after; do
        echo "== run $i: $side" >&2
        dotnet "$work/bin-$side/smtpgw-signbench.dll" --label "$side" --tsv "$work/rows.tsv" "$@" >&2
    done
done

# rows: label, case, cpu median, wall median, bytes/op, cpu p25 (each run's); the table shows the median over the runs.
awk -F'\t' '
    function median(list,   n, a, i, j, t) {
        n = split(list, a, " ")
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
        return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    function pct(b, a) { return b > 0 ? 100 * (a - b) / b : 0 }
    {
        k = $2; if (!(k in seen)) { seen[k] = 1; order[++n] = k }
        cpu[$1, k] = cpu[$1, k] " " $3; wall[$1, k] = wall[$1, k] " " $4; mem[$1, k] = mem[$1, k] " " $5; low[$1, k] = low[$1, k] " " $6
    }
    END {
        printf "%-22s %11s %11s %7s %11s %11s %7s %11s %11s %11s %11s\n", "case", "cpu before", "cpu after", "delta",
            "p25 before", "p25 after", "delta", "wall before", "wall after", "B/op before", "B/op after"
        for (i = 1; i <= n; i++) {
            k = order[i]; b = median(cpu["before", k]); a = median(cpu["after", k]); lb = median(low["before", k]); la = median(low["after", k])
            printf "%-22s %11.1f %11.1f %6.1f%% %11.1f %11.1f %6.1f%% %11.1f %11.1f %11d %11d\n", k, b, a, pct(b, a), lb, la, pct(lb, la),
                median(wall["before", k]), median(wall["after", k]), median(mem["before", k]), median(mem["after", k])
        }
    }' "$work/rows.tsv"
