"""Unpack each layer of an OCI image layout into DEST/0, DEST/1, ... (index.json -> manifest ->
gzip layers, in order). prebake's layers only add files (no whiteouts). Extracting as root keeps
the numeric owners and modes. Works on every Python 3.8+: tarfile's `filter=` exists only in
newer patch releases (Debian's 3.11.2 lacks it), so it is passed only where it exists.
Usage: unpack_layers.py IMAGE_LAYOUT DEST"""
import json
import pathlib
import sys
import tarfile

root, dest = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])


def blob(digest):
    return root / "blobs/sha256" / digest.split(":")[1]


index = json.loads((root / "index.json").read_text())
manifest = json.loads(blob(index["manifests"][0]["digest"]).read_text())
extra = {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}
for n, layer in enumerate(manifest["layers"]):
    with tarfile.open(blob(layer["digest"])) as t:
        t.extractall(dest / str(n), numeric_owner=True, **extra)
    print(f"layer {n}: {layer['digest']} -> {dest / str(n)}")
