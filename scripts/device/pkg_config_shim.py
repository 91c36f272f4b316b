#!/usr/bin/env python3
"""A minimal pkg-config for the GPU machine, which has none.

Answers the queries CMake's FindPkgConfig makes, from .pc files staged in build-devdeps:
  build-devdeps/pkgconfig/*.pc          written here; '@DEPS@' is replaced by the build-devdeps path
  build-devdeps/sysroot/usr/lib/x86_64-linux-gnu/pkgconfig/*.pc
                                        from Debian packages unpacked into the sysroot; their
                                        -I/-L paths are prefixed with the sysroot (what real
                                        pkg-config does with PKG_CONFIG_SYSROOT_DIR)
Requires.private and Libs.private are ignored: everything staged is a shared library or a
static library that needs nothing beyond its own -l.
"""
import os
import re
import sys

DEPS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYSROOT = os.path.join(DEPS, "sysroot")
DIRS = [(os.path.join(DEPS, "pkgconfig"), ""),
        (os.path.join(SYSROOT, "usr/lib/x86_64-linux-gnu/pkgconfig"), SYSROOT),
        (os.path.join(SYSROOT, "usr/share/pkgconfig"), SYSROOT)]


def load(module):
    for d, sysroot in DIRS:
        path = os.path.join(d, module + ".pc")
        if os.path.isfile(path):
            break
    else:
        return None
    variables, fields = {}, {}
    text = open(path).read().replace("@DEPS@", DEPS)

    def expand(value):
        return re.sub(r"\$\{(\w+)\}", lambda m: variables.get(m.group(1), ""), value)

    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([\w.]+)\s*=\s*(.*)$", line)
        if m:
            variables[m.group(1)] = expand(m.group(2))
            continue
        m = re.match(r"^([\w.]+)\s*:\s*(.*)$", line)
        if m:
            fields[m.group(1)] = expand(m.group(2))
    def rooted(flags):
        out = []
        for f in flags.split():
            if sysroot and (f.startswith("-I/") or f.startswith("-L/")):
                f = f[:2] + sysroot + f[2:]
            out.append(f)
        return out
    return {"variables": variables, "version": fields.get("Version", "0"),
            "cflags": rooted(fields.get("Cflags", "")), "libs": rooted(fields.get("Libs", "")),
            "sysroot": sysroot}


def main(argv):
    opts = [a for a in argv if a.startswith("--")]
    mods = [a for a in argv if not a.startswith("-")]
    # "libzmq >= 4" style specs: keep the names only
    mods = [m for m in mods if not re.match(r"^[<>=!]+$", m) and not re.match(r"^[\d.]+$", m)]
    if "--version" in opts:
        print("0.29.2")
        return 0
    pcs = []
    for m in mods:
        pc = load(m)
        if pc is None:
            sys.stderr.write(f"Package {m} was not found in the staged pkg-config path\n")
            return 1
        pcs.append(pc)
    out = []
    for o in opts:
        for pc in pcs:
            if o == "--modversion":
                out.append(pc["version"])
            elif o.startswith("--variable="):
                v = pc["variables"].get(o.split("=", 1)[1], "")
                if v.startswith("/") and pc["sysroot"]:
                    v = pc["sysroot"] + v
                out.append(v)
            elif o in ("--cflags", "--cflags-only-I"):
                out += [f for f in pc["cflags"] if o == "--cflags" or f.startswith("-I")]
            elif o == "--cflags-only-other":
                out += [f for f in pc["cflags"] if not f.startswith("-I")]
            elif o == "--libs":
                out += pc["libs"]
            elif o == "--libs-only-L":
                out += [f for f in pc["libs"] if f.startswith("-L")]
            elif o == "--libs-only-l":
                out += [f for f in pc["libs"] if f.startswith("-l")]
            elif o == "--libs-only-other":
                out += [f for f in pc["libs"] if not f.startswith(("-l", "-L"))]
    if out:
        print(" ".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
