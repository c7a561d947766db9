"""Published bytes of an IVF index if its list chunks were written by this tree's writer: every
``ivf_list`` chunk of a published index decoded and encoded again (same lists, codes and refine
CIDs; centroids, summaries and refine chunks unchanged), next to the byte model's estimate.

    PYTHONPATH=pkg .venv/bin/python bench/reencode_lists.py --portal-dir DIR --manifest CID --out F.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "pkg"))
sys.path.insert(0, os.path.join(ROOT, "bench"))

from bench_ivf_recall import DirClient  # noqa: E402
from s5vec import layout  # noqa: E402
from s5vec.index import ivf_tune  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--portal-dir", required=True)
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    cl = DirClient(args.portal_dir)
    man = layout.decode_manifest(cl.download(args.manifest))
    n = int(man["count"])
    unlisted = sum(u["bytes"] for u in ((man.get("extra") or {}).get("unlisted") or {}).values())
    old_lists = new_lists = 0
    ids_len = 0
    for c in man["chunks"]:
        if c["kind"] != "ivf_list":
            continue
        body = layout.decode_chunk(cl.download(c["cid"]), "ivf_list")
        for e in body["lists"]:
            e["metadata"] = list(e["metadata"])
            ids_len += sum(len(i.encode()) for i in e["ids"])
        old_lists += int(c["size"])
        new_lists += len(layout.encode_chunk("ivf_list", body))
    listed = sum(int(c["size"]) for c in man["chunks"])
    p = man["index"]["params"]
    bm = ivf_tune.bytes_model(n, p["nlist"], man["dim"], code_bytes=p["pq_m"], refine_bytes=p.get("refine_m"),
                              refine_rows=p.get("refine_rows"), codec=p["codec"], refine=p.get("refine"),
                              pq_m=p["pq_m"], refine_m=p.get("refine_m"), rotate=bool(p.get("pq_rotate")),
                              id_bytes=ids_len / n, meta_bytes=1.0)
    out = {"n": n, "spec": man.get("spec"), "published_before": round((listed + unlisted) / n, 2),
           "published_after": round((listed - old_lists + new_lists + unlisted) / n, 2),
           "list_chunks_before": round(old_lists / n, 2), "list_chunks_after": round(new_lists / n, 2),
           "manifest_bytes_per_vector": round(len(cl.download(args.manifest)) / n, 2),
           "model_per_vector": round(bm["per_vector"], 2), "model_list_per_record": round(bm["list"], 2),
           "mean_id_bytes": round(ids_len / n, 3)}
    out["model_error"] = round(out["model_per_vector"] / out["published_after"] - 1, 4)
    print(json.dumps(out))
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
