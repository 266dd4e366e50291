# syntax=docker/dockerfile:1
#
# SmtpGateway container image.
#
#   docker build -t smtpgw .
#   docker run --rm -p 2525:2525 -p 2465:2465 -p 2526:2526 \
#       -v smtpgw-data:/var/lib/smtpgw \
#       -v "$PWD/certs/dev:/etc/smtpgw/tls:ro" smtpgw
#
# Note: .NET 10 images are published for Ubuntu 24.04 "noble" (the default
# tags), Alpine and Azure Linux; there are no Debian images for .NET 10.
# The tags are pinned to noble so that `apt-get` works as written.

# ---- build ------------------------------------------------------------------------
FROM mcr.microsoft.com/dotnet/sdk:10.0-noble AS build
WORKDIR /src
ENV DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1

# Restore first, from the project files only, so that the package layer is cached.
COPY Directory.Build.props Directory.Packages.props ./
COPY src/SmtpGateway/SmtpGateway.csproj src/SmtpGateway/
COPY src/SmtpGateway.Host/SmtpGateway.Host.csproj src/SmtpGateway.Host/
RUN dotnet restore src/SmtpGateway.Host/SmtpGateway.Host.csproj

COPY src/ src/
# config/gateway.json is embedded in the library as the built-in default configuration.
COPY config/ config/
RUN dotnet publish src/SmtpGateway.Host/SmtpGateway.Host.csproj -c Release -o /app --no-restore

# ---- runtime ----------------------------------------------------------------------
# aspnet, not runtime: the admin endpoint (issue 13) runs on Kestrel, part of the ASP.NET Core shared framework.
FROM mcr.microsoft.com/dotnet/aspnet:10.0-noble AS runtime

# softhsm2 + opensc (pkcs11-tool): the development PKCS#11 token; ca-certificates: TLS to smarthosts; util-linux: chrt
# for the entrypoint (part of the base image; named so that it stays).
RUN apt-get update \
    && apt-get install -y --no-install-recommends softhsm2 opensc ca-certificates util-linux \
    && rm -rf /var/lib/apt/lists/*

# The image's built-in non-root user "app" ($APP_UID) owns the data volume.
# With Gateway:Hsm:SoftHsm (the default) the gateway writes its own SoftHSM2 config and token directory under
# the data volume (/var/lib/smtpgw/hsm) and points the module at it; create tokens and keys with
#   docker run … smtpgw hsm init-token --tenant T   and   smtpgw dkim keygen …
# The tenants' HSM PINs never go in the data volume (a copy of it must not carry them): mount them at
# /etc/smtpgw/pins (0700, files 0600), or pass them as environment variables / systemd-style credentials
# ($CREDENTIALS_DIRECTORY/smtpgw-<tenant>.pin) and set SMTPGW__Gateway__Hsm__AllowPinFiles=false.
RUN mkdir -p /etc/smtpgw/tls /var/lib/smtpgw /etc/smtpgw/pins \
    && chown -R "$APP_UID" /var/lib/smtpgw /etc/smtpgw/pins \
    && chmod 0700 /etc/smtpgw/pins

COPY --from=build /app /app
COPY config/gateway.json /etc/smtpgw/gateway.json

# Container defaults over config/gateway.json (the .NET way; override with -e):
# data under the volume, listeners on all interfaces, TLS material mounted at /etc/smtpgw/tls.
# The legacy relay trusts only the client networks in the config (loopback in the demo config), and
# container clients arrive from the bridge network: mount your own config at /etc/smtpgw/gateway.json.
ENV SMTPGW__Gateway__DataDirectory=/var/lib/smtpgw \
    SMTPGW__Gateway__Hsm__PinDirectory=/etc/smtpgw/pins \
    SMTPGW__Gateway__Tls__CertificatePath=/etc/smtpgw/tls/gateway.crt \
    SMTPGW__Gateway__Tls__KeyPath=/etc/smtpgw/tls/gateway.key \
    SMTPGW__Gateway__Listeners__0__Address=0.0.0.0 \
    SMTPGW__Gateway__Listeners__1__Address=0.0.0.0 \
    SMTPGW__Gateway__Listeners__2__Address=0.0.0.0

# When the runtime sees one CPU (a cpuset of one; likely also --cpus=1, which .NET counts as one CPU: tested with taskset
# only), .NET waits ten times longer before it compiles hot code at its optimising tier, and every newly compiled
# method restarts the wait. Pinned to one core the gateway still spent 0.98 CPU ms per message after 40,000 messages,
# reaching its steady 0.55 only after 120,000; with this setting 0.64 after 12,000 (issue 15). It shortens the
# warm-up, not the steady state, and changes nothing on more than one CPU. An internal runtime setting, not a
# documented one: check it when the .NET version changes.
ENV DOTNET_TC_DelaySingleProcMultiplier=1

USER $APP_UID
WORKDIR /var/lib/smtpgw
VOLUME ["/var/lib/smtpgw"]
# 2525 submission (STARTTLS), 2465 submissions (implicit TLS), 2526 legacy relay, 8025 admin HTTP.
# The admin endpoint stays on the container's loopback unless you publish it on purpose:
# -e SMTPGW__Gateway__Admin__Address=0.0.0.0 with Gateway:Admin:Tls set, behind your network policy.
EXPOSE 2525 2465 2526 8025

# `docker stop` sends SIGTERM; the gateway drains sessions for up to Gateway:ShutdownTimeout
# (20 s), longer than docker's default 10 s grace: use `docker stop -t 30`.
STOPSIGNAL SIGTERM
# SCHED_BATCH, as the systemd unit sets it (config/examples/smtpgw.service, CPUSchedulingPolicy=batch): a woken gateway
# thread waits for the running one's slice instead of preempting it; on two cores shared with the load generator, about
# a third fewer context switches and less CPU per message (issue 15, README "Hot path"). An unprivileged change of
# policy (sched(7)). Where it is refused (gVisor, a strict seccomp profile) the gateway starts anyway with the default
# policy and says so on stderr; exec keeps the gateway as PID 1. To run without it:
#   docker run --entrypoint /app/smtpgw IMAGE serve --config /etc/smtpgw/gateway.json
ENTRYPOINT ["/bin/sh", "-c", "/usr/bin/chrt --batch --pid 0 $$ 2>/dev/null || echo 'smtpgw: SCHED_BATCH refused here; running with the default scheduling policy' >&2; exec /app/smtpgw \"$@\"", "smtpgw"]
CMD ["serve", "--config", "/etc/smtpgw/gateway.json"]
