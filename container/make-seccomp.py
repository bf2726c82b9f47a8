#!/usr/bin/env python3
"""Write container/seccomp-chromium.json from Docker's default seccomp profile.

Docker's default profile lets ``clone`` create namespaces, ``unshare`` and
``chroot`` only with CAP_SYS_ADMIN / CAP_SYS_CHROOT, which the session
container never has (``cap_drop=ALL``). Chromium's sandbox needs exactly these
three without capabilities: it creates a user namespace (where it is root),
then pid and net namespaces, and chroots into an empty directory. Allowing
them is what keeps Chromium's sandbox working instead of ``--no-sandbox``;
``clone3`` stays ENOSYS (glibc falls back to ``clone``) and ``setns``,
``mount``, ``bpf``, keyring and module calls stay blocked.

    python3 container/make-seccomp.py DEFAULT.json > container/seccomp-chromium.json

DEFAULT.json is ``profiles/seccomp/default.json`` of the Docker engine in use;
Debian ships it in golang-github-docker-docker-dev
(/usr/share/gocode/src/github.com/docker/docker/profiles/seccomp/default.json);
``apt-get download`` that package and ``dpkg-deb -x`` it to get the file
without installing Go sources.
"""

from __future__ import annotations

import json
import sys

CHROMIUM_RULE = {
    "names": ["clone", "unshare", "chroot"],
    "action": "SCMP_ACT_ALLOW",
    "args": [],
    "comment": "visual-runtime: Chromium's namespace sandbox without CAP_SYS_ADMIN",
    "includes": {},
    "excludes": {},
}


def main() -> None:
    with open(sys.argv[1]) as f:
        profile = json.load(f)
    if profile.get("defaultAction") != "SCMP_ACT_ERRNO":
        raise SystemExit("not Docker's default profile (defaultAction is not SCMP_ACT_ERRNO)")
    profile["syscalls"] = [r for r in profile["syscalls"] if r.get("comment") != CHROMIUM_RULE["comment"]]
    profile["syscalls"].append(CHROMIUM_RULE)
    json.dump(profile, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
