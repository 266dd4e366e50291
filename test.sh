#!/usr/bin/env bash
# SmtpGateway: install test dependencies, build, run every test.
#
#   ./test.sh                 all tests (unit/transcript + functional)
#   ./test.sh --filter EXPR   passed on to every `dotnet test` (e.g. --filter FullyQualifiedName~CrashSafety)
#
# Ends with one line "N passed, N failed". Exit status is non-zero when the build
# fails, any test fails, a test run aborts, or no test ran at all.
# Environment: CONFIGURATION (default Release). TRX files go to TestResults/.
# SMTPGW_FUZZ_ITERATIONS: cases per fuzzing property (tests/SmtpGateway.Tests/Fuzz, default 1000, a few seconds in all);
# raise it for a long run, e.g. SMTPGW_FUZZ_ITERATIONS=200000 ./test.sh --filter FullyQualifiedName~Fuzz
set -euo pipefail

cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")"
configuration="${CONFIGURATION:-Release}"
results="$PWD/TestResults"
projects=(tests/SmtpGateway.Tests tests/SmtpGateway.FunctionalTests)
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1

say() { printf 'test.sh: %s\n' "$*" >&2; }

# --- 1. Test dependencies -----------------------------------------------------------
# postfix: /usr/sbin/smtp-sink (the independent smarthost); swaks + libnet-ssleay-perl:
# the independent client (with TLS); openssl: test certificates; python3: result summing.
pkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
missing=()
[[ -x /usr/sbin/smtp-sink ]] || missing+=(postfix)
command -v swaks >/dev/null 2>&1 || missing+=(swaks)
if command -v dpkg-query >/dev/null 2>&1 && ! pkg_installed libnet-ssleay-perl; then missing+=(libnet-ssleay-perl); fi
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
command -v curl >/dev/null 2>&1 || missing+=(curl)
# unbound: the local DNS server serving the MX test zone (delivery in Mx mode).
[[ -x /usr/sbin/unbound ]] || missing+=(unbound)
# softhsm2: DKIM keys live in SoftHSM2 tokens; python3-dkim (+ python3-nacl for ed25519): the independent DKIM verifier.
[[ -e /usr/lib/softhsm/libsofthsm2.so ]] || missing+=(softhsm2)
if command -v dpkg-query >/dev/null 2>&1; then
    for p in python3-dkim python3-nacl opensc; do pkg_installed "$p" || missing+=("$p"); done
fi
# sasl2-bin (saslpasswd2) + libsasl2-modules: the authenticating Postfix smarthosts (Cyrus SASL sasldb2, PLAIN/LOGIN);
# gdb: gcore, the core dump searched for tenant secrets.
[[ -x /usr/sbin/saslpasswd2 ]] || missing+=(sasl2-bin)
if command -v dpkg-query >/dev/null 2>&1 && ! pkg_installed libsasl2-modules; then missing+=(libsasl2-modules); fi
[[ -x /usr/bin/gcore ]] || missing+=(gdb)
# mount/umount (Debian "mount", util-linux): the fault tests mount a small tmpfs on the spool (spool full → 452 4.3.1).
[[ -x /usr/bin/mount && -x /usr/bin/umount ]] || missing+=(mount)
# strace: the spool-sync tests trace the gateway's syncs and replies (and delay a sync by fault injection);
# e2fsprogs (mkfs.ext4): one of them gives the data directory an ext4 file system of its own on a loop device.
[[ -x /usr/bin/strace ]] || missing+=(strace)
[[ -x /usr/sbin/mkfs.ext4 ]] || missing+=(e2fsprogs)
# haproxy: config/examples/haproxy-health.cfg is run in front of a gateway (its /readyz health check).
[[ -x /usr/sbin/haproxy ]] || missing+=(haproxy)
# chromium: the dashboard test's headless browser (driven by the Playwright driver bundled in its NuGet package, which
# downloads nothing: it is pointed at /usr/bin/chromium).
[[ -x /usr/bin/chromium ]] || missing+=(chromium)

if ((${#missing[@]} > 0)); then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        say "installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        # Postfix is only wanted for smtp-sink: no mail system configuration, nothing started.
        echo 'postfix postfix/main_mailer_type select No configuration' | debconf-set-selections
        apt-get update -qq
        apt-get install -y -qq "${missing[@]}"
    else
        say "missing test dependencies: ${missing[*]}; install them with:"
        say "  echo 'postfix postfix/main_mailer_type select No configuration' | sudo debconf-set-selections"
        say "  sudo DEBIAN_FRONTEND=noninteractive apt-get install -y ${missing[*]}"
        echo "0 passed, 0 failed"
        exit 1
    fi
fi

if ! command -v dotnet >/dev/null 2>&1; then
    say "the .NET 10 SDK ('dotnet') is not on PATH; see ./run.sh for how to install it"
    echo "0 passed, 0 failed"
    exit 1
fi

# --- 2. Build -----------------------------------------------------------------------
say "building SmtpGateway.sln ($configuration)"
if ! dotnet build SmtpGateway.sln -c "$configuration" -nologo -v quiet; then
    say "build failed"
    echo "0 passed, 0 failed"
    exit 1
fi

# --- 3. Test ------------------------------------------------------------------------
rm -rf "$results"
mkdir -p "$results"
status=0
for project in "${projects[@]}"; do
    name="$(basename "$project")"
    # Functional tests report what they saw (transcripts, crash-test counts): show it for passing tests too.
    verbosity=normal
    [[ "$name" == *FunctionalTests ]] && verbosity=detailed
    say "running $name"
    if ! dotnet test "$project" -c "$configuration" --no-build -nologo \
        --results-directory "$results" \
        --logger "trx;LogFileName=$name.trx" \
        --logger "console;verbosity=$verbosity" \
        --blame-hang-timeout 5m --blame-hang-dump-type none \
        "$@"; then
        status=1
    fi
done

# --- 4. Sum the TRX counters across projects ------------------------------------------
summary="$(python3 - "$results" "${projects[@]}" <<'PY'
import os, sys, xml.etree.ElementTree as ET
results, projects = sys.argv[1], sys.argv[2:]
ns = "{http://microsoft.com/schemas/VisualStudio/TeamTest/2010}"
passed = failed = skipped = 0
missing = []
for project in projects:
    name = os.path.basename(project)
    path = os.path.join(results, name + ".trx")
    if not os.path.exists(path):
        missing.append(name)
        continue
    counters = ET.parse(path).getroot().find(f"{ns}ResultSummary/{ns}Counters")
    c = {k: int(v) for k, v in counters.attrib.items()}
    p = c.get("passed", 0)
    f = c.get("failed", 0) + c.get("error", 0) + c.get("timeout", 0) + c.get("aborted", 0)
    s = c.get("notExecuted", 0) + c.get("inconclusive", 0)
    print(f"  {name}: {p} passed, {f} failed, {s} skipped", file=sys.stderr)
    # Name every failure (and the first lines of its message) next to the total, so a
    # truncated CI log still says what broke.
    for r in ET.parse(path).getroot().iter(f"{ns}UnitTestResult"):
        if r.get("outcome") not in ("Passed", "NotExecuted", "Inconclusive"):
            message = r.find(f"{ns}Output/{ns}ErrorInfo/{ns}Message")
            text = (message.text or "").strip().splitlines() if message is not None else []
            print(f"  FAILED {r.get('testName')} ({r.get('duration')})", file=sys.stderr)
            for line in text[:6]:
                print(f"      {line[:300]}", file=sys.stderr)
    passed, failed, skipped = passed + p, failed + f, skipped + s
for name in missing:
    print(f"  {name}: no results (run aborted?)", file=sys.stderr)
print(passed, failed, skipped, len(missing))
PY
)" || { say "could not read the test results"; summary="0 1 0 1"; }
read -r passed failed skipped missing_results <<<"$summary"

if ((missing_results > 0)); then status=1; fi
if ((failed > 0)); then status=1; fi
if ((passed + failed == 0)); then say "no tests ran"; status=1; fi
((skipped == 0)) || say "$skipped skipped"
echo "$passed passed, $failed failed"
exit "$status"
