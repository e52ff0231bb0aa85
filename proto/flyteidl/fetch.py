#!/usr/bin/env python3
"""Builds flyteidl's FileDescriptorSet from the published PyPI wheels.

Why wheels: the flyteidl wheel embeds every .proto as a serialized FileDescriptorProto in its *_pb2.py
modules (`AddSerializedFile(b'...')`). Reading those bytes gives the exact schema the Python client uses,
without committing third-party .proto sources. The well-known types, google.api and openapiv2 option
files come from their own wheels so the set is closed under imports.

Every wheel is pinned by version and sha256; pip refuses a download whose hash differs.
Only the standard library is used, so this runs before any venv exists.

usage: fetch.py OUT_FILE
"""
import ast
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile

# (requirement, sha256 of the py3-none-any wheel)
WHEELS = [
    ("flyteidl==1.16.8", "51acec32bbb6cda17671bf5776c0388d47725d2401385bacc14eda635165b726"),
    ("protobuf==6.33.1", "d595a9fd694fdeb061a62fbe10eb039cc1e444df81ec9bb70c7fc59ebcb1eafa"),
    ("googleapis-common-protos==1.76.0", "59e13344a9f3651aa201a03e2bee815a3bf43a4baf1f9ff8a9b62a840ce25fac"),
    ("protoc-gen-openapiv2==0.0.1", "18090c8be3877c438e7da0f7eb7cace45a9a210306bca4707708dbad367857be"),
]

# Modules of the helper wheels that flyteidl imports (directly or through google/api/annotations).
WANTED_PREFIXES = ("flyteidl/",)
WANTED_FILES = {
    "google/protobuf/any_pb2.py",
    "google/protobuf/descriptor_pb2.py",
    "google/protobuf/duration_pb2.py",
    "google/protobuf/struct_pb2.py",
    "google/protobuf/timestamp_pb2.py",
    "google/protobuf/wrappers_pb2.py",
    "google/api/annotations_pb2.py",
    "google/api/http_pb2.py",
    "protoc_gen_openapiv2/options/annotations_pb2.py",
    "protoc_gen_openapiv2/options/openapiv2_pb2.py",
}


def serialized_file(source: str, name: str):
    """Returns the bytes literal passed to AddSerializedFile, or None for modules without one."""
    tree = ast.parse(source, filename=name)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "AddSerializedFile"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, bytes)
        ):
            return node.args[0].value
    return None


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    out = os.path.abspath(sys.argv[1])
    with tempfile.TemporaryDirectory() as tmp:
        req = os.path.join(tmp, "requirements.txt")
        with open(req, "w") as f:
            for spec, sha in WHEELS:
                f.write(f"{spec} --hash=sha256:{sha}\n")
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
             "--platform", "any", "--python-version", "3.11", "--require-hashes", "-r", req, "-d", tmp],
            check=True,
        )
        files = {}
        for whl in sorted(p for p in os.listdir(tmp) if p.endswith(".whl")):
            with zipfile.ZipFile(os.path.join(tmp, whl)) as z:
                for member in z.namelist():
                    if not member.endswith("_pb2.py"):
                        continue
                    if not (member.startswith(WANTED_PREFIXES) or member in WANTED_FILES):
                        continue
                    blob = serialized_file(z.read(member).decode("utf-8"), member)
                    if blob is not None:
                        files[member] = blob
    missing = sorted(WANTED_FILES - set(files))
    if missing:
        print(f"flyteidl schema: modules missing from the wheels: {', '.join(missing)}", file=sys.stderr)
        return 1
    # FileDescriptorSet { repeated FileDescriptorProto file = 1; }: field 1, wire type 2 (tag byte 0x0a).
    body = b"".join(b"\x0a" + varint(len(b)) + b for _, b in sorted(files.items()))
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp_out = out + ".tmp"
    with open(tmp_out, "wb") as f:
        f.write(body)
    os.replace(tmp_out, out)
    print(f"flyteidl schema: {len(files)} files, sha256 {hashlib.sha256(body).hexdigest()[:16]}, written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
