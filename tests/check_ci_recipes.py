#!/usr/bin/env python3
"""Checks the CI recipes in ci/ (run by .ci/run after the tests):

    python3 tests/check_ci_recipes.py target/debug/calibench

- every YAML file parses; GitHub workflows have triggers and jobs, the GitLab pipeline has its
  stages, a parallel matrix and a JUnit report, the Kubernetes Job is Indexed with GPU limits and
  maps JOB_COMPLETION_INDEX to --shard, the Slurm script maps SLURM_ARRAY_TASK_ID to --shard;
- every calibench command in them names a real subcommand and only flags that subcommand's
  --help lists, so the recipes hold no logic the CLI lacks.
"""

import glob
import os
import re
import subprocess
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
problems = []


def check(cond, what):
    if not cond:
        problems.append(what)


EXPLICIT = r"(?:\./calibench|(?:\./)?target/release/calibench|\"\$CALIBENCH\")"
BARE = r"(?:^|&&)[ \t]*calibench"


def calibench_commands(text, subcommands):
    """(subcommand words, flags) of every calibench invocation in shell text: `./calibench`,
    `target/release/calibench` or `"$CALIBENCH"` (whatever follows must be a subcommand), or a
    bare `calibench` opening a command with a known subcommand after it (else it is prose, like a
    workflow's name). Comment lines are skipped, backslash continuations joined."""
    text = "\n".join(l for l in text.replace("\\\n", " ").splitlines() if not l.lstrip().startswith("#"))
    out = []
    for form, explicit in ((EXPLICIT, True), (BARE, False)):
        for m in re.finditer(form + r"[ \t]+([a-z][a-z0-9-]*(?:[ \t]+[a-z][a-z0-9-]*)?)([^\n;&|]*)", text, re.M):
            words = m.group(1).split()
            if not explicit and words[0] not in subcommands:
                continue
            out.append((words, re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", m.group(2))))
    return out


def strings(node):
    """Every string in a parsed YAML document (run:, script:, args: … are shell text; YAML has
    already folded `>` blocks into one line)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for v in node.values():
            yield from strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from strings(v)


def help_text(binary, words):
    r = subprocess.run([binary, *words, "--help"], capture_output=True, text=True)
    return r.returncode, r.stdout + r.stderr


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target/debug/calibench")
    files = sorted(glob.glob(os.path.join(ROOT, "ci/**/*"), recursive=True))
    files += glob.glob(os.path.join(ROOT, "ci/**/.gitlab-ci.yml"), recursive=True)
    files = sorted({f for f in files if os.path.isfile(f) and not f.endswith(".md")})
    check(files, "no CI recipes in ci/")
    top, _ = help_text(binary, [])
    subcommands = set(re.findall(r"^  ([a-z][a-z0-9-]*) ", help_text(binary, [])[1], re.M))
    seen = 0
    for path in files:
        rel = os.path.relpath(path, ROOT)
        text = open(path).read()
        docs = []
        if path.endswith((".yml", ".yaml")):
            docs = list(yaml.safe_load_all(text))
            check(docs and all(d for d in docs), f"{rel}: empty YAML")
            if "/github/" in path:
                d = docs[0]
                check(True in d or "on" in d, f"{rel}: no trigger (on:)")
                check(d.get("jobs"), f"{rel}: no jobs")
            if path.endswith(".gitlab-ci.yml"):
                d = docs[0]
                check(d.get("stages") == ["build", "run", "report"], f"{rel}: stages")
                check("matrix" in d.get("gpu", {}).get("parallel", {}), f"{rel}: gpu job has no parallel: matrix:")
                check(d.get("report", {}).get("artifacts", {}).get("reports", {}).get("junit") == "junit.xml",
                      f"{rel}: no artifacts:reports:junit")
            if "/k8s/" in path:
                job = docs[0]
                spec = job["spec"]
                check(job["kind"] == "Job" and spec.get("completionMode") == "Indexed", f"{rel}: not an Indexed Job")
                c = spec["template"]["spec"]["containers"][0]
                check("nvidia.com/gpu" in c.get("resources", {}).get("limits", {}), f"{rel}: no nvidia.com/gpu limit")
                check("JOB_COMPLETION_INDEX" in " ".join(c.get("args", [])) and "--shard" in " ".join(c.get("args", [])),
                      f"{rel}: JOB_COMPLETION_INDEX is not mapped to --shard")
        if path.endswith(".sbatch"):
            check(subprocess.run(["bash", "-n", path]).returncode == 0, f"{rel}: bash -n fails")
            check("SLURM_ARRAY_TASK_ID" in text and "--shard" in text, f"{rel}: no array task → shard")
            check("afterany" in text, f"{rel}: the merge job does not wait for the shards")
        shell = "\n".join(s for d in docs for s in strings(d)) if path.endswith((".yml", ".yaml")) else text
        for words, flags in calibench_commands(shell, subcommands):
            seen += 1
            sub = words[:1]
            if sub and sub[0] in ("cache", "store") and len(words) > 1:
                sub = words[:2]
            check(sub and sub[0] in subcommands, f"{rel}: calibench {' '.join(words)}: no such subcommand")
            if not sub or sub[0] not in subcommands:
                continue
            rc, h = help_text(binary, sub)
            for f in flags:
                check(re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", h), f"{rel}: calibench {' '.join(sub)} has no {f}")
    check(seen >= 20, f"only {seen} calibench commands found in ci/: the extraction is broken")
    if problems:
        print("\n".join(problems))
        sys.exit(1)
    print(f"ci/: {len(files)} recipes, {seen} calibench commands, every subcommand and flag exists")


if __name__ == "__main__":
    main()
