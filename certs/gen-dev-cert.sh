#!/usr/bin/env bash
# Generates a self-signed development TLS certificate for the gateway, if absent.
#
#   certs/gen-dev-cert.sh [OUTDIR]      (default: certs/dev next to this script)
#
# Writes OUTDIR/gateway.crt and OUTDIR/gateway.key (PEM; key mode 600):
# EC P-256, SAN DNS:localhost and IP:127.0.0.1 (and ::1), valid 825 days.
# Existing files are left alone; delete them to make a new pair.
# FORCE=1 regenerates. Never commit the key (.gitignore ignores certs/dev/, *.key, *.pem).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
outdir="${1:-$here/dev}"
crt="$outdir/gateway.crt"
key="$outdir/gateway.key"
cn="${CERT_CN:-localhost}"
days="${CERT_DAYS:-825}"

if ! command -v openssl >/dev/null 2>&1; then
    echo "gen-dev-cert: openssl not found; install it: apt-get install -y openssl" >&2
    exit 1
fi

if [[ "${FORCE:-0}" != 1 && -s "$crt" && -s "$key" ]]; then
    echo "gen-dev-cert: $crt and $key exist; leaving them (FORCE=1 to regenerate)"
    exit 0
fi

mkdir -p "$outdir"
chmod 700 "$outdir"

# Write into temporaries in the same directory, then rename, so that a
# concurrent reader never sees a half-written pair.
tmpkey="$(mktemp "$outdir/.gateway.key.XXXXXX")"
tmpcrt="$(mktemp "$outdir/.gateway.crt.XXXXXX")"
trap 'rm -f "$tmpkey" "$tmpcrt"' EXIT
chmod 600 "$tmpkey"

openssl req -x509 -new -nodes \
    -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -keyout "$tmpkey" -out "$tmpcrt" \
    -days "$days" -sha256 \
    -subj "/CN=$cn/O=SmtpGateway development" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1" \
    -addext "basicConstraints=critical,CA:FALSE" \
    -addext "keyUsage=critical,digitalSignature" \
    -addext "extendedKeyUsage=serverAuth" \
    2>/dev/null

chmod 600 "$tmpkey"
chmod 644 "$tmpcrt"
mv -f "$tmpkey" "$key"
mv -f "$tmpcrt" "$crt"
trap - EXIT

echo "gen-dev-cert: wrote $crt and $key (self-signed, $days days, SAN localhost/127.0.0.1/::1)"
