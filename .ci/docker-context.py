#!/usr/bin/env python3
"""Build what `docker build .` would build, without a Docker engine.

No Docker engine runs on the CI machines, so this reproduces the image's build stage from
the Dockerfile itself:

1. the build context: every file of the repository that .dockerignore does not exclude
   (Docker's rules: patterns with `*`, `?`, `**`, a leading `!` re-includes, the last
   matching line wins);
2. the build stage, instruction by instruction, in a scratch directory standing for its
   WORKDIR: each `COPY` copies exactly its sources from that context (a source the context
   lacks fails here, as it would in `docker build`), each `RUN` runs there with the same shell
   command (the stage's RUN lines are cargo builds);
3. the runtime stage: each `COPY --from=<build stage>` must find its file where the build
   left it, and each plain `COPY` its source in the context.

Exit status 0 when the image's build stage succeeds. Prints the time it took.

    python3 .ci/docker-context.py [--keep] [--dockerfile Dockerfile]
"""
import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def instructions(dockerfile):
    """(instruction, arguments) pairs, with continuation lines joined and comments dropped."""
    out, cur = [], ""
    for line in dockerfile.read_text().splitlines():
        s = line.strip()
        if not cur and (not s or s.startswith("#")):
            continue
        if s.startswith("#"):
            continue
        if s.endswith("\\"):
            cur += s[:-1] + " "
            continue
        cur += s
        word, _, rest = cur.partition(" ")
        out.append((word.upper(), rest.strip()))
        cur = ""
    return out


def ignore_rules(path):
    rules = []
    if not path.exists():
        return rules
    for line in path.read_text().splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        negate = s.startswith("!")
        pat = s[1:].strip() if negate else s
        pat = os.path.normpath(pat.lstrip("/")).replace(os.sep, "/")
        rules.append((negate, re.compile(pattern_regex(pat))))
    return rules


def pattern_regex(pat):
    """Go's filepath.Match plus Docker's `**`; a match of a directory covers what it holds."""
    out, i = "", 0
    while i < len(pat):
        c = pat[i]
        if pat.startswith("**", i):
            out += ".*"
            i += 2
            if pat.startswith("/", i):
                out = out[:-2] + "(.*/)?"
                i += 1
            continue
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            j = pat.find("]", i)
            if j < 0:
                out += re.escape(c)
            else:
                out += pat[i:j + 1].replace("[!", "[^")
                i = j
        else:
            out += re.escape(c)
        i += 1
    return "^" + out + "(/.*)?$"


def excluded(rel, rules):
    hit = False
    for negate, rx in rules:
        if rx.match(rel):
            hit = not negate
    return hit


def context_files(rules):
    """Repository files in the build context (git's view: tracked and untracked, not ignored
    by git, as a fresh clone would have them), minus .dockerignore's exclusions."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, check=True, capture_output=True).stdout.decode()
    files = [f for f in listed.split("\0") if f and (ROOT / f).is_file()]
    return {f for f in files if not excluded(f, rules)}


def copy_args(rest):
    """Sources and destination of a COPY, and its --from= stage if any."""
    flags, words = {}, []
    if rest.startswith("["):
        import json
        words = json.loads(rest)
    else:
        words = shlex.split(rest)
    while words and words[0].startswith("--"):
        k, _, v = words.pop(0)[2:].partition("=")
        flags[k] = v
    return words[:-1], words[-1], flags


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dockerfile", default="Dockerfile")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    a = ap.parse_args()

    dockerfile = ROOT / a.dockerfile
    rules = ignore_rules(ROOT / ".dockerignore")
    context = context_files(rules)
    steps = instructions(dockerfile)
    stages, current = {}, None
    for ins, rest in steps:
        if ins == "FROM":
            words = rest.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(len(stages))
            current = {"name": name, "image": words[0], "steps": []}
            stages[name] = current
        elif current is not None:
            current["steps"].append((ins, rest))

    scratch = Path(tempfile.mkdtemp(prefix="ngw-docker-context-"))
    started = time.monotonic()
    ok = False
    try:
        layout = {}  # stage name -> (workdir in the image, scratch directory)
        for name, stage in stages.items():
            base = scratch / name
            base.mkdir()
            workdir = "/"
            print(f"== stage {name} (FROM {stage['image']})", flush=True)
            for ins, rest in stage["steps"]:
                if ins == "WORKDIR":
                    workdir = rest if rest.startswith("/") else f"{workdir.rstrip('/')}/{rest}"
                    (base / workdir.lstrip("/")).mkdir(parents=True, exist_ok=True)
                elif ins == "COPY":
                    sources, dest, flags = copy_args(rest)
                    dest_abs = dest if dest.startswith("/") else f"{workdir.rstrip('/')}/{dest}"
                    target = base / dest_abs.lstrip("/")
                    if "from" in flags:
                        src_stage = flags["from"]
                        if src_stage not in layout:
                            sys.exit(f"COPY --from={src_stage}: no such stage before {name}")
                        for s in sources:
                            path = layout[src_stage] / s.lstrip("/")
                            if not path.exists():
                                sys.exit(f"COPY --from={src_stage} {s}: the build left no such file")
                            print(f"   COPY --from={src_stage} {s}: present "
                                  f"({path.stat().st_size} bytes)")
                        continue
                    for s in sources:
                        s = os.path.normpath(s).replace(os.sep, "/")
                        matched = sorted(f for f in context
                                         if s == "." or f == s or f.startswith(s + "/"))
                        if not matched:
                            sys.exit(f"COPY {s}: not in the build context (missing, or excluded "
                                     f"by .dockerignore)")
                        into_dir = dest.endswith("/") or len(sources) > 1 or s == "." or \
                            not (ROOT / s).is_file()
                        for f in matched:
                            if (ROOT / s).is_file():
                                out = target / Path(f).name if into_dir else target
                            else:
                                rel = f if s == "." else f[len(s) + 1:]
                                out = target / rel
                            out.parent.mkdir(parents=True, exist_ok=True)
                            shutil.copy2(ROOT / f, out)
                        print(f"   COPY {s} -> {dest_abs}: {len(matched)} file(s)")
                elif ins == "RUN":
                    cwd = base / workdir.lstrip("/")
                    print(f"   RUN {rest}", flush=True)
                    t0 = time.monotonic()
                    subprocess.run(["bash", "-ec", rest], cwd=cwd, check=True)
                    print(f"   ({time.monotonic() - t0:.0f} s)", flush=True)
                # ENV, USER, EXPOSE, ... do not touch files.
            layout[name] = base
        ok = True
    except subprocess.CalledProcessError as e:
        print(f"docker-context: a RUN step failed ({e.returncode})", file=sys.stderr)
    finally:
        took = time.monotonic() - started
        print(f"docker-context: {'image build stage succeeded' if ok else 'FAILED'} "
              f"in {took:.0f} s ({scratch})" if a.keep else
              f"docker-context: {'image build stage succeeded' if ok else 'FAILED'} in {took:.0f} s")
        if not a.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
