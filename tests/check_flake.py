#!/usr/bin/env python3
"""Checks flake.lock against flake.nix without evaluating anything (run by .ci/run after
`nix-instantiate --parse flake.nix`): the lock is Nix's version-7 format, its root inputs are the
flake's inputs, `follows` are declared in both, and every locked GitHub input has a full commit,
a lastModified time and an SRI sha256 narHash. (The narHashes of crane, rust-overlay, flake-utils
and nix-systems were computed with `nix hash path` on those commits' trees; nixpkgs' rev and
narHash pair is the published one of nixos-24.11 at that commit. See README, "Nix".)"""

import base64
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
flake = open(os.path.join(ROOT, "flake.nix")).read()
lock = json.load(open(os.path.join(ROOT, "flake.lock")))
problems = []

inputs_block = re.search(r"inputs\s*=\s*\{(.*?)\n  \};", flake, re.S).group(1)
declared = set(re.findall(r"^\s{4}([a-z][\w-]*)(?:\.url)?\s*=", inputs_block, re.M))
urls = dict(re.findall(r"([a-z][\w-]*)(?:\.url|\s*=\s*\{\s*url)\s*=\s*\"github:([^\"]+)\"", inputs_block))
if lock.get("version") != 7 or lock.get("root") != "root":
    problems.append("flake.lock is not a version-7 lock with root \"root\"")
nodes = lock["nodes"]
root_inputs = nodes["root"]["inputs"]
if set(root_inputs) != declared:
    problems.append(f"flake.nix declares {sorted(declared)}, flake.lock's root has {sorted(root_inputs)}")
for name, target in root_inputs.items():
    node = nodes.get(target)
    if node is None:
        problems.append(f"root input {name} points at missing node {target}")
        continue
    original = node.get("original", {})
    spec = f"{original.get('owner')}/{original.get('repo')}" + (f"/{original['ref']}" if "ref" in original else "")
    if name in urls and urls[name] != spec:
        problems.append(f"{name}: flake.nix says github:{urls[name]}, the lock's original is {spec}")
if nodes.get("rust-overlay", {}).get("inputs", {}).get("nixpkgs") != ["nixpkgs"] or "follows" not in flake:
    problems.append("rust-overlay's nixpkgs must follow ours in both files")
for name, node in nodes.items():
    if name == "root":
        continue
    locked = node.get("locked", {})
    if locked.get("type") != "github":
        problems.append(f"{name}: not a github input")
    if not re.fullmatch(r"[0-9a-f]{40}", locked.get("rev", "")):
        problems.append(f"{name}: rev is not a full commit")
    if not isinstance(locked.get("lastModified"), int):
        problems.append(f"{name}: no lastModified")
    h = locked.get("narHash", "")
    try:
        ok = h.startswith("sha256-") and len(base64.b64decode(h[7:], validate=True)) == 32
    except ValueError:
        ok = False
    if not ok:
        problems.append(f"{name}: narHash {h!r} is not an SRI sha256")
    for inp, ref in node.get("inputs", {}).items():
        if isinstance(ref, str) and ref not in nodes:
            problems.append(f"{name}: input {inp} points at missing node {ref}")
if problems:
    print("\n".join(problems))
    sys.exit(1)
print(f"flake.lock: {len(nodes) - 1} locked inputs consistent with flake.nix ({', '.join(sorted(declared))})")
