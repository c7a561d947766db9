"""Experiment (bench/README.md, 10M section): republish an IVF index with its centroids chunk stored as
float16 (list chunks untouched), to measure what float16 centroids would save at open.

    python bench/centroids_f16.py PORTAL_DIR MANIFEST_CID   # prints the new manifest CID
"""
import sys
import numpy as np
sys.path.insert(0, "bench")
import bench_build as b
from s5vec import api, layout

portal_dir, cid = sys.argv[1], sys.argv[2]
proc, url = b.start_portal(portal_dir)
try:
    st = api.make_store([url], timeout=120)
    man = layout.decode_manifest(st.get(cid))
    old = man["index"]["centroids"]
    body = layout.decode_chunk(st.get(old), "ivf_centroids")
    c = np.asarray(body["centroids"])
    body = dict(body, centroids=np.ascontiguousarray(c.astype(np.float16)))
    data = layout.encode_chunk("ivf_centroids", body)
    new = st.put(data)
    print("centroids", c.dtype, c.shape, len(st.get(old)), "->", len(data))
    man["index"]["centroids"] = new
    if "chunks" in man["index"]:  # older descriptors also listed every CID here
        man["index"]["chunks"] = [new if x == old else x for x in man["index"]["chunks"]]
    for e in man["chunks"]:
        if e["cid"] == old:
            e["cid"], e["size"] = new, len(data)
    doc = {k: v for k, v in man.items()}
    out = layout.dumps(doc)
    print("manifest", len(st.get(cid)), "->", len(out))
    print("CID", st.put(out))
finally:
    proc.terminate()
