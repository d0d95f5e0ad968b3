#!/bin/sh
# agentcg prerm: stop the plugin before its binary goes away. Pinned links
# stay (they keep protecting running containers); agentcg detach --all
# removes them.
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
	systemctl stop agentcg-nri.service >/dev/null 2>&1 || true
fi
