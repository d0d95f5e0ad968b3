#!/usr/bin/env python3
"""series.py: pick one patch series out of a thread mbox (lore's t.mbox.gz).

  series.py MBOX OUTDIR

Keeps the messages whose subject is "[... PATCH ... vN K/M] ..." with K >= 1
(no cover letter, no "Re:" replies), takes the highest version present, checks
that 1..M are all there exactly once, and writes each as a one-message mboxrd
file OUTDIR/NNNN.patch (quoting kept, so `git am --patch-format=mboxrd` reads
it). Prints "NNNN<TAB>subject" per patch. Exit 1 with a message naming what
is missing or ambiguous.
"""
import email.parser
import email.policy
import gzip
import os
import re
import sys

SUBJ = re.compile(r"^\s*\[(?P<tags>[^\]]*\bPATCH\b[^\]]*)\]\s*(?P<title>.*)$", re.S)
NUM = re.compile(r"\b(\d+)/(\d+)\b")
VER = re.compile(r"\bv(\d+)\b", re.I)


def messages(raw):
    """Split an mbox(rd) into messages; each keeps its 'From ' line."""
    cur = []
    for line in raw.splitlines(keepends=True):
        if line.startswith(b"From ") and (not cur or cur[-1].strip() == b""):
            if cur:
                yield b"".join(cur)
            cur = [line]
        elif cur:
            cur.append(line)
    if cur:
        yield b"".join(cur)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip().splitlines()[2])
    path, outdir = sys.argv[1], sys.argv[2]
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    parser = email.parser.BytesHeaderParser(policy=email.policy.default)
    found = {}  # version -> {k: (subject, bytes)}
    total = {}
    for msg in messages(raw):
        body = msg.split(b"\n", 1)[1] if msg.startswith(b"From ") else msg
        hdr = parser.parsebytes(body)
        subject = " ".join(str(hdr.get("Subject", "")).split())
        m = SUBJ.match(subject)
        if not m:
            continue  # replies ("Re: [PATCH ...]") and unrelated mail
        tags = m.group("tags")
        n = NUM.search(tags)
        if not n:
            continue
        k, total_m = int(n.group(1)), int(n.group(2))
        if k == 0:
            continue  # cover letter
        v = VER.search(tags)
        ver = int(v.group(1)) if v else 1
        found.setdefault(ver, {}).setdefault(k, []).append((subject, msg))
        total.setdefault(ver, set()).add(total_m)
    if not found:
        sys.exit(f"series.py: {path}: no '[PATCH ... K/M]' messages found")
    ver = max(found)
    if len(total[ver]) != 1:
        sys.exit(f"series.py: {path}: v{ver} messages disagree on the series length: {sorted(total[ver])}")
    (count,) = total[ver]
    missing = [k for k in range(1, count + 1) if k not in found[ver]]
    if missing:
        sys.exit(f"series.py: {path}: v{ver} of the series lacks patch(es) {missing} of {count}")
    dup = [k for k, v in found[ver].items() if len(v) > 1]
    if dup:
        sys.exit(f"series.py: {path}: v{ver} has more than one message for patch(es) {dup}")
    os.makedirs(outdir, exist_ok=True)
    for k in range(1, count + 1):
        subject, msg = found[ver][k][0]
        name = f"{k:04d}.patch"
        with open(os.path.join(outdir, name), "wb") as f:
            f.write(msg)
        print(f"{name}\t{subject}")


if __name__ == "__main__":
    main()
