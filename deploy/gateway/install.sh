#!/usr/bin/env bash
# Install the EdgeWatch agent on a Debian/Ubuntu gateway, as root, from a checkout:
#   sudo deploy/gateway/install.sh
# Creates the edgewatch user, a venv in /opt/edgewatch with only the agent's extras,
# /etc/edgewatch (config, credentials, model key) and the systemd unit. Re-running it
# upgrades the agent and keeps the config and the buffer.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
[ "$(id -u)" -eq 0 ] || { echo "install.sh: run as root" >&2; exit 1; }

if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3 python3-venv
fi
id edgewatch >/dev/null 2>&1 || useradd --system --home-dir /var/lib/edgewatch --shell /usr/sbin/nologin edgewatch
install -d -m 0755 /opt/edgewatch
[ -x /opt/edgewatch/venv/bin/python ] || python3 -m venv /opt/edgewatch/venv
/opt/edgewatch/venv/bin/pip install --quiet --upgrade pip
/opt/edgewatch/venv/bin/pip install --quiet "$repo[agent]"

install -d -m 0750 -o root -g edgewatch /etc/edgewatch /etc/edgewatch/keys
install -d -m 0750 -o edgewatch -g edgewatch /var/lib/edgewatch /var/lib/edgewatch/models
if [ ! -e /etc/edgewatch/agent.yaml ]; then
    install -m 0640 -o root -g edgewatch "$here/agent.example.yaml" /etc/edgewatch/agent.yaml
    echo "install.sh: edit /etc/edgewatch/agent.yaml (gateway id, buses, devices, broker)"
fi
# Credentials and the model key are provisioned per gateway (see deploy/gateway/README.md):
#   /etc/edgewatch/mqtt.password   this gateway's MQTT password, 0640 root:edgewatch
#   /etc/edgewatch/ca.pem          the broker's CA
#   /etc/edgewatch/keys/models.pub the Ed25519 public key model updates are signed with
install -m 0644 "$here/edgewatch-agent.service" /etc/systemd/system/edgewatch-agent.service
systemctl daemon-reload
/opt/edgewatch/venv/bin/edgewatch-agent check --config /etc/edgewatch/agent.yaml || \
    echo "install.sh: 'edgewatch-agent check' could not read every device (see above)"
systemctl enable --now edgewatch-agent
systemctl --no-pager status edgewatch-agent || true
