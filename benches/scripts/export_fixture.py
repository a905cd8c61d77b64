# Writes an export (JSON Lines, the format of `conversations export`) of N conversations
# of M messages each (~300 bytes of text per message), the same file every time:
#
#   python3 benches/scripts/export_fixture.py 10000 20 > big.jsonl   # 10k / 200k, 96 MiB
#   /usr/bin/time -v target/release/conversations --database-url m.db import --scope bench big.jsonl
#   /usr/bin/time -v target/release/conversations --database-url m.db export --scope bench --output out.jsonl
#
# The figures of BENCHMARKS.md's "Export and import" section come from these commands.
import json, sys, uuid, datetime, random
random.seed(7)
n, per = int(sys.argv[1]), int(sys.argv[2])
base = datetime.datetime(2025, 1, 1, tzinfo=datetime.timezone.utc)
ms = lambda t: t.strftime('%Y-%m-%dT%H:%M:%S.') + f"{t.microsecond//1000:03d}Z"
words = "revenue region quarter index query table join latency schema column partition vacuum".split()
out = sys.stdout
out.write(json.dumps({"type":"header","format":"conversation-export","version":1,"scope":"bench"}, separators=(',',':'))+"\n")
for i in range(n):
    cid = str(uuid.UUID(int=(0x01900000_0000_7000_8000_000000000000 | (i << 16))))
    created = base + datetime.timedelta(minutes=i)
    ids = [str(uuid.UUID(int=random.getrandbits(128), version=4)) for _ in range(per)]
    out.write(json.dumps({"type":"conversation","id":cid,"title":f"conversation {i}","titleSource":"user",
        "createdAt":ms(created),"updatedAt":ms(created+datetime.timedelta(seconds=per)),"messageCount":per,"lastSeq":per,
        "headId":ids[-1],"pinned":False,"archived":False,"archivedAt":None,"metadata":{},"version":1}, separators=(',',':'))+"\n")
    for j, mid in enumerate(ids):
        text = " ".join(random.choice(words) for _ in range(40))
        out.write(json.dumps({"type":"message","id":mid,"parentId":ids[j-1] if j else None,"seq":j+1,
            "role":"user" if j%2==0 else "assistant","content":text,"metadata":{},
            "createdAt":ms(created+datetime.timedelta(seconds=j))}, separators=(',',':'))+"\n")
