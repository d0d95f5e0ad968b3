#!/usr/bin/env bash
# port-7.3.sh: apply the raw RFC v6 series (as posted, against bpf-next
# ~6.19) to a Linux 7.3 git tree, doing by script what the reviewed port did
# by hand (see README.md, "The port to 7.3"):
#
#   1. drop 04/12 "mm: define mem_cgroup_get_from_ino() outside of
#      CONFIG_SHRINKER_DEBUG": 7.3 has no mem_cgroup_get_from_ino();
#   2. leave out MAINTAINERS hunks (documentation only; 7.3's MEMCG section
#      differs, which is what made 09/12 and 12/12 fail);
#   3. a patch that `git am -3` cannot apply (08/12: memcontrol.[ch] moved
#      on since 6.19) is applied with GNU patch and fuzz, and the commit
#      notes it;
#   4. one final commit moves mm/bpf_memcontrol.c to 7.3's
#      mem_cgroup_get_from_id(), which returns NULL (not an ERR_PTR) on a
#      missing cgroup: reg returns -ENOENT then, unreg already checks
#      IS_ERR_OR_NULL.
#
#   port-7.3.sh TREE PATCH...     (PATCH: one-message mboxrd files, in order)
#
# The result is then compared file by file with the reviewed port on Debian's
# 7.3.4 source (expected blob ids below): a match means the tree is
# byte-identical to the one the VM tests ran on, except MAINTAINERS.
set -euo pipefail
tree=$1
shift
GIT=(git -C "$tree" -c user.name=agentcg-kernel -c user.email=kernel@agentcg.invalid)
log() { echo "port-7.3: $*" >&2; }

for p in "$@"; do
	subject=$(grep -m1 -i '^Subject:' "$p" | sed 's/^Subject: *//I')
	case $subject in
	*"mem_cgroup_get_from_ino() outside of CONFIG_SHRINKER_DEBUG"*)
		log "drop (not needed on 7.3): $subject"
		continue
		;;
	esac
	if "${GIT[@]}" am -q -3 --exclude=MAINTAINERS --patch-format=mboxrd "$p" >/dev/null 2>&1; then
		log "applied: $subject"
		continue
	fi
	# Fuzzy apply of the diff minus MAINTAINERS; patch(1) fails on any
	# hunk it cannot place, and then so do we.
	if ! "${GIT[@]}" am --show-current-patch=diff |
		awk '/^diff --git /{skip = ($3 == "a/MAINTAINERS")} !skip' |
		(cd "$tree" && patch -p1 -F3 --no-backup-if-mismatch -s); then
		"${GIT[@]}" am --abort || true
		log "ERROR: cannot apply on this tree, even with fuzz: $subject"
		exit 1
	fi
	"${GIT[@]}" add -A
	"${GIT[@]}" am --continue -q >/dev/null
	"${GIT[@]}" commit -q --amend -m "$("${GIT[@]}" log -1 --format=%B)" \
		-m "[port to Linux 7.3: applied with GNU patch -F3 (context moved since bpf-next); MAINTAINERS hunks left out]"
	log "applied with fuzz: $subject"
done

f=$tree/mm/bpf_memcontrol.c
[ -f "$f" ] || { log "ERROR: $f missing: is this the memcg BPF series?"; exit 1; }
if grep -q 'mem_cgroup_get_from_ino(' "$f"; then
	perl -0pi -e '
		s/memcg = mem_cgroup_get_from_ino\(ops_link->cgroup_id\);\n\tif \(IS_ERR\(memcg\)\)\n\t\treturn PTR_ERR\(memcg\);/memcg = mem_cgroup_get_from_id(ops_link->cgroup_id);\n\tif (!memcg)\n\t\treturn -ENOENT;/ or die "port-7.3: ERROR: bpf_memcg_ops_reg() lookup not in the expected form\n";
		s/\bmem_cgroup_get_from_ino\(/mem_cgroup_get_from_id(/g' "$f"
	"${GIT[@]}" commit -q -a -m "mm/bpf: use mem_cgroup_get_from_id() (port to Linux 7.3)" \
		-m "7.3 has no mem_cgroup_get_from_ino(); mem_cgroup_get_from_id(u64) takes the same cgroup id and returns NULL, not an ERR_PTR, when there is no such memcg. bpf_memcg_ops_reg() returns -ENOENT then (the errno the old helper gave); bpf_memcg_ops_unreg() already checked IS_ERR_OR_NULL()."
	log "fixup: mem_cgroup_get_from_ino() -> mem_cgroup_get_from_id()"
fi
if grep -rq 'mem_cgroup_get_from_ino(' "$tree/mm" "$tree/include/linux"; then
	log "ERROR: mem_cgroup_get_from_ino() still used after the port"
	exit 1
fi

# Blob ids of the reviewed port (Debian linux-source-7.3 7.3.4-1~bpo13+1 +
# ../shared/kernel/patches) for every file the series touches but MAINTAINERS.
# A path may be listed twice: the scripted port of mm/memcontrol.c places
# one declaration in try_charge_memcg() a line apart from the hand port.
same=0 differ=()
for path in $(grep -v '^#' "$(dirname "$0")/port-7.3.blobs" | awk '{print $2}' | sort -u); do
	got=$(git -C "$tree" rev-parse -q --verify "HEAD:$path" 2>/dev/null || echo missing)
	if grep -v '^#' "$(dirname "$0")/port-7.3.blobs" | grep -qx "$got $path"; then
		same=$((same + 1))
	else
		differ+=("$path")
	fi
done
if [ ${#differ[@]} -eq 0 ]; then
	log "result matches the reviewed 7.3.4 port in all $same files the series touches (MAINTAINERS aside; mm/memcontrol.c may differ by one declaration line, see port-7.3.blobs)"
else
	log "WARNING: result differs from the reviewed 7.3.4 port in: ${differ[*]}"
	log "WARNING: (expected on another 7.3.y base; review those files before trusting the kernel)"
fi
