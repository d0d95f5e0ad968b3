#!/bin/sh
# agentcg postinst: reload systemd's units; start nothing new by itself,
# because the runtime must be configured first (agentcg configure).
set -e
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
	# An upgrade ($2 is the old version): a plugin that runs goes on with
	# the new binary; one that does not stays stopped.
	if [ "$1" = configure ] && [ -n "${2:-}" ]; then
		systemctl try-restart agentcg-nri.service >/dev/null 2>&1 || true
	fi
fi
cat <<'MSG'
agentcg installed. Next steps:
  agentcg configure --runtime containerd   # or: --runtime docker [--set-default]
  systemctl restart containerd             # or docker
  systemctl enable --now agentcg-nri       # containerd/NRI nodes
  systemctl enable --now agentcg-hook-preload   # Docker/podman/CRI-O nodes (hook)
  agentcg doctor                           # what is still missing
Config: /etc/agentcg/config.yaml
MSG
