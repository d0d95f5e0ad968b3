#!/bin/sh
# agentcg postinst: reload systemd's units; start nothing by itself, because
# the runtime must be configured first (agentcg configure).
set -e
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
cat <<'MSG'
agentcg installed. Next steps:
  agentcg configure --runtime containerd   # or: --runtime docker [--set-default]
  systemctl restart containerd             # or docker
  systemctl enable --now agentcg-nri       # containerd/NRI nodes
  agentcg doctor                           # what is still missing
Config: /etc/agentcg/config.yaml
MSG
