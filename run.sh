#!/usr/bin/env bash
# SmtpGateway: set up and serve, from a fresh clone.
#
#   ./run.sh            install what is missing, build, create dev TLS material,
#                       print a swaks line to try, and serve config/gateway.json
#   ./run.sh ARGS...    same set-up, then run `smtpgw ARGS...`
#                       (e.g. ./run.sh check-config, ./run.sh --help)
#
# Environment: CONFIG (default config/gateway.json), CONFIGURATION (default Release),
# SKIP_BUILD=1 to use the existing build. Set-up messages go to stderr, so that
# the output of `./run.sh ARGS...` is smtpgw's own.
set -euo pipefail

cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")"
root="$PWD"
config="${CONFIG:-config/gateway.json}"
configuration="${CONFIGURATION:-Release}"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1

say() { printf 'run.sh: %s\n' "$*" >&2; }
die() { printf 'run.sh: error: %s\n' "$*" >&2; exit 1; }

pkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

# --- 1. System packages -------------------------------------------------------
# openssl: dev TLS certificate. swaks (+ libnet-ssleay-perl for its TLS): to try the gateway.
install_packages() {
    local wanted=(openssl swaks libnet-ssleay-perl softhsm2) missing=() p
    if ! command -v dpkg-query >/dev/null 2>&1; then
        command -v openssl >/dev/null 2>&1 || say "openssl is missing; install it with your package manager"
        command -v swaks >/dev/null 2>&1 || say "swaks is missing; install it with your package manager"
        return 0
    fi
    for p in "${wanted[@]}"; do pkg_installed "$p" || missing+=("$p"); done
    ((${#missing[@]} == 0)) && return 0
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        say "installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2
        apt-get install -y -qq "${missing[@]}" >&2
    else
        say "missing packages: ${missing[*]}; install them with:"
        say "  sudo apt-get update && sudo apt-get install -y ${missing[*]}"
        command -v openssl >/dev/null 2>&1 || [[ -s certs/dev/gateway.crt ]] \
            || die "openssl is needed to create the dev TLS certificate"
    fi
}

# --- 2. .NET SDK ----------------------------------------------------------------
check_dotnet() {
    if ! command -v dotnet >/dev/null 2>&1; then
        say "the .NET 10 SDK ('dotnet') is not on PATH. On Debian 12:"
        say "  wget https://packages.microsoft.com/config/debian/12/packages-microsoft-prod.deb -O /tmp/packages-microsoft-prod.deb"
        say "  sudo dpkg -i /tmp/packages-microsoft-prod.deb && sudo apt-get update && sudo apt-get install -y dotnet-sdk-10.0"
        say "  (see https://learn.microsoft.com/dotnet/core/install/linux-debian)"
        exit 1
    fi
    if ! dotnet --list-sdks 2>/dev/null | grep -q '^10\.'; then
        say "warning: no .NET 10 SDK found by 'dotnet --list-sdks'; the build needs net10.0"
    fi
}

# --- 3. Build -----------------------------------------------------------------------
outdir="src/SmtpGateway.Host/bin/$configuration/net10.0"
build() {
    if [[ "${SKIP_BUILD:-0}" == 1 && -e "$outdir/smtpgw.dll" ]]; then return 0; fi
    say "building ($configuration)"
    if ! dotnet build src/SmtpGateway.Host/SmtpGateway.Host.csproj -c "$configuration" -nologo -v quiet -clp:NoSummary >&2; then
        die "build failed"
    fi
}

# --- 4. Dev TLS material ----------------------------------------------------------
dev_tls() {
    certs/gen-dev-cert.sh >&2
}

# --- 5. HSM, DKIM keys, demo session token -----------------------------------------
smtpgw_cmd() {
    if [[ -x "$outdir/smtpgw" ]]; then "$outdir/smtpgw" "$@"; else dotnet "$outdir/smtpgw.dll" "$@"; fi
}
smtpgw() {
    if [[ -x "$outdir/smtpgw" ]]; then exec "$outdir/smtpgw" "$@"; fi
    exec dotnet "$outdir/smtpgw.dll" "$@"
}

# >>> HSM/TOKEN SETUP >>>
# Later issues: create the SoftHSM2 token directory under the data directory,
# initialise the dev token and generate per-tenant DKIM keys if absent
# (`smtpgw dkim keygen ...`). Keep every step idempotent: ./run.sh runs it each time.
dev_hsm() {
    local t d
    for t in tenant-a tenant-b; do
        d="$t.example"
        smtpgw_cmd hsm init-token --config "$config" --tenant "$t" >&2 || die "could not create the dev HSM token for $t"
        if [[ "$(smtpgw_cmd dkim dns --config "$config" --tenant "$t" --json 2>/dev/null)" == "{}" ]]; then
            smtpgw_cmd dkim keygen --config "$config" --tenant "$t" --domain "$d" --selector ed1 --alg ed25519 >/dev/null \
                || die "could not generate the dev DKIM key ed1 for $t (without keys its mail gets 451: signing fails closed)"
            smtpgw_cmd dkim keygen --config "$config" --tenant "$t" --domain "$d" --selector rsa1 --alg rsa2048 >/dev/null \
                || die "could not generate the dev DKIM key rsa1 for $t (without keys its mail gets 451: signing fails closed)"
            say "generated DKIM keys for $d in $t's SoftHSM2 token (ed25519 'ed1', rsa2048 'rsa1'); records: ./run.sh dkim dns --tenant $t"
        fi
    done
}

# A fresh session token for the demo tenant (AUTH user = tenant id, password = token),
# for the printed swaks line. Empty when this build has no `smtpgw token` verb.
demo_tenant="tenant-a"
demo_sender="demo@tenant-a.example"
mint_demo_token() {
    smtpgw_cmd token --help >/dev/null 2>&1 || return 0
    smtpgw_cmd token mint --config "$config" --tenant "$demo_tenant" --ttl 1h --description "./run.sh demo" 2>/dev/null \
        || say "warning: could not mint a demo token (smtpgw token mint --config $config --tenant $demo_tenant)"
}
# <<< HSM/TOKEN SETUP <<<

install_packages
check_dotnet
build
dev_tls
dev_hsm

if (($# > 0)); then
    smtpgw "$@"
fi

[[ -f "$config" ]] || die "$config not found"
token="$(mint_demo_token)"
if [[ -n "$token" ]]; then
    auth=" --auth PLAIN --auth-user $demo_tenant --auth-password $token"
    auth_note="  The token is valid for 1 hour; mint another with: ./run.sh token mint --tenant $demo_tenant"
else
    auth=""
    auth_note="  (no AUTH: 127.0.0.0/8 may relay without it in this build)"
fi
data_dir="${SMTPGW__Gateway__DataDirectory:-data}"
[[ "$data_dir" == /* ]] || data_dir="$root/$data_dir"
cat >&2 <<EOF

  SmtpGateway is starting with $config
    submission (STARTTLS)   127.0.0.1:2525
    submissions (TLS)       127.0.0.1:2465
    legacy relay (plain)    127.0.0.1:2526
    admin API, dashboard    http://127.0.0.1:8025/  (metrics /metrics, health /healthz /readyz)
                            a key for it: ./run.sh admin key create --operator

  In another terminal, send a message:

    swaks --server 127.0.0.1:2525 --tls --from $demo_sender --to someone@example.net$auth

$auth_note
  Implicit TLS: the same with --server 127.0.0.1:2465 --tlsc instead of --server 127.0.0.1:2525 --tls.
  Legacy relay (no TLS, no AUTH, by client network): swaks --server 127.0.0.1:2526 --from $demo_sender --to someone@example.net
  swaks does not verify the self-signed dev certificate unless given --tls-verify.

  Delivered messages land in $data_dir/drop/<tenant>/<queue-id>.eml, here
  $data_dir/drop/$demo_tenant/ ("default" for mail no tenant owns); the queue id is in
  swaks's "250 2.0.0 Ok: queued as <id>" line. Stop with Ctrl-C.

EOF
smtpgw serve --config "$config"
