#!/bin/bash
# Inside the cgroup v2 guest of scripts/cgroup-v2-vm.sh (as the vr-job systemd unit):
# copy the checkout in, install it into the image's venv, then run
# `visual-runtime doctor`, a session round trip and the limits tests on the
# local backend. Output goes to /mnt/job (the host's --out folder):
# guest.log (everything), doctor.json, roundtrip.json, pytest.log, junit.xml,
# results.json and summary.txt. Not meant to run anywhere else.
set -uo pipefail
JOB=/mnt/job
SRC=/opt/vr/src
exec > >(tee -a "$JOB/guest.log") 2>&1
T0=$(date +%s)
step() { printf '==> [%4ss] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }

step "guest: $(uname -r); cmdline: $(cat /proc/cmdline)"
mount | grep -E 'cgroup' | sed 's/^/   /'
controllers="$(cat /sys/fs/cgroup/cgroup.controllers 2>&1)"
echo "   /sys/fs/cgroup/cgroup.controllers: $controllers"
echo "   /proc/self/cgroup: $(tr '\n' ' ' < /proc/self/cgroup)"

step "copy the checkout to $SRC (without .venv, build, .git)"
mkdir -p "$SRC"
tar -C /mnt/src --exclude=./.venv --exclude=./build --exclude=./.git --exclude='*/node_modules' \
    --exclude='*/__pycache__' --exclude=./benchmarks/results -cf - . | tar -C "$SRC" -xf -
ln -sfn /opt/vr-venv "$SRC/.venv"
/opt/vr-venv/bin/pip install -q --no-deps --no-index --no-build-isolation -e "$SRC" \
  || echo "pip install -e failed"
chmod o+rx /opt/vr "$SRC" /opt/vr-venv
cd "$SRC" || exit 1
PY=.venv/bin/python
# Under QEMU's emulation (TCG) a session takes far longer than the 30 s start timeout.
# pytest-timeout's default (120 s a test) would fire inside a session's start.
START_TIMEOUT=30 TEST_TIMEOUT=120
if grep -q tcg "$JOB/accel.txt" 2>/dev/null; then START_TIMEOUT=240 TEST_TIMEOUT=1500; fi
export VR_TEST_START_TIMEOUT_S=$START_TIMEOUT

if [ "$(cat "$JOB/mode.txt" 2>/dev/null)" = debug ]; then
  # --mode debug: run each $JOB/cmd/<n>.sh the host drops in (output to <n>.out,
  # status to <n>.rc) until $JOB/cmd/stop appears; for fixing things without reboots.
  mkdir -p "$JOB/cmd"
  step "debug: waiting for $JOB/cmd/<n>.sh"
  while [ ! -e "$JOB/cmd/stop" ]; do
    for f in "$JOB"/cmd/*.sh; do
      [ -e "$f" ] && [ ! -e "${f%.sh}.rc" ] || continue
      (cd "$SRC" && bash "$f") > "${f%.sh}.out" 2>&1
      echo $? > "${f%.sh}.rc"
    done
    sleep 1
  done
  exit 0
fi

step "visual-runtime doctor --backend local"
.venv/bin/visual-runtime doctor --backend local --state-dir /var/lib/vr-doctor
doctor_rc=$?
.venv/bin/visual-runtime doctor --backend local --state-dir /var/lib/vr-doctor --json \
  > "$JOB/doctor.json" 2>/dev/null
echo "doctor exit status $doctor_rc"

if [ "$(cat "$JOB/mode.txt" 2>/dev/null)" = hybrid ]; then
  # the hybrid boot checks only what doctor says about the layout
  $PY - "$JOB" "$doctor_rc" "$controllers" <<'EOF'
import json, platform, sys
from pathlib import Path
from gateway.backends.cgroup_layout import cgroup_layout
job, doctor_rc, controllers = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
layout = cgroup_layout()
report = json.loads((job / "doctor.json").read_text())
results = {"kernel": platform.release(), "cmdline": Path("/proc/cmdline").read_text().strip(),
           "cgroup_controllers": controllers.split(), "cgroup2_only": False,
           "layout": {"mode": layout.mode, "v1": layout.v1, "v2_mount": layout.v2_mount,
                      "v2_controllers": sorted(layout.v2_controllers)},
           "doctor": {"exit": doctor_rc, "report": report}}
(job / "results.json").write_text(json.dumps(results, indent=2))
cg = next(c for c in report["checks"] if c["name"] == "cgroups")
text = (f"hybrid guest: layout {results['layout']}\ndoctor exit {doctor_rc}; cgroups check: "
        f"ok={cg['ok']}: {cg['detail']}\n  fix: {cg['fix']}\n")
(job / "summary.txt").write_text(text)
print(text)
EOF
  step "done"
  sync
  exit 0
fi

step "session round trip (benchmarks/cgroup_v2_guest.py)"
$PY -m benchmarks.cgroup_v2_guest --start-timeout "$START_TIMEOUT" --out "$JOB/roundtrip.json" > "$JOB/roundtrip.log" 2>&1
rt_rc=$?
grep -E '^(ok  |FAIL) ' "$JOB/roundtrip.log"
echo "round trip exit status $rt_rc"

TESTS="$(cat "$JOB/tests.txt" 2>/dev/null)"
[ -n "$TESTS" ] || TESTS="tests/security/test_resources.py tests/gateway/test_isolation.py tests/gateway/test_smoke.py tests/gateway/test_lifecycle.py::test_twenty_cycles_leak_nothing tests/cli/test_cgroup_detection.py -k not_docker"
step "pytest $TESTS"
# -k not_docker: the limits tests are parametrized local/docker; the guest has no Docker.
args=()
for a in $TESTS; do
  if [ "$a" = "-k" ]; then args+=("-k"); elif [ "$a" = "not_docker" ]; then args+=("not docker"); else args+=("$a"); fi
done
rm -rf /tmp/vr-pytest
$PY -m pytest -p no:cacheprovider -v -rA --timeout="$TEST_TIMEOUT" --basetemp=/tmp/vr-pytest --junitxml="$JOB/junit.xml" \
  "${args[@]}" > "$JOB/pytest.log" 2>&1
pytest_rc=$?
# every session's app.log and agent.log, for the failures
(cd /tmp/vr-pytest 2>/dev/null && find . -path '*/logs/*.log' -print0 | tar --null -T - -czf "$JOB/pod-logs.tgz") || true
grep -E '^(PASSED|FAILED|ERROR|SKIPPED) |^=+ .* in [0-9.]+s' "$JOB/pytest.log" | tail -60
echo "pytest exit status $pytest_rc"

step "after the tests: cgroups left under /sys/fs/cgroup/visual-runtime"
left="$(ls /sys/fs/cgroup/visual-runtime 2>/dev/null | grep -v '^cgroup\.' | grep -v -E '^(memory|cpu|pids|io|cpuset|hugetlb|rdma|misc)\.' | tr '\n' ' ')"
echo "   ${left:-none}"

$PY - "$JOB" "$doctor_rc" "$rt_rc" "$pytest_rc" "$controllers" "$left" <<'EOF'
import json, platform, sys
from pathlib import Path
job, doctor_rc, rt_rc, pytest_rc, controllers, left = sys.argv[1:]
job = Path(job)
def load(name):
    try:
        return json.loads((job / name).read_text())
    except (OSError, ValueError):
        return None
tests = {}
try:
    import xml.etree.ElementTree as ET
    for case in ET.parse(job / "junit.xml").iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = child.tag
        tests[name] = {"outcome": outcome, "seconds": float(case.get("time") or 0)}
except (OSError, ET.ParseError):
    pass
results = {
    "kernel": platform.release(),
    "cmdline": Path("/proc/cmdline").read_text().strip(),
    "cgroup_controllers": controllers.split(),
    "cgroup2_only": Path("/sys/fs/cgroup/cgroup.controllers").exists()
                    and not any(l.split()[2] == "cgroup" for l in open("/proc/mounts")),
    "doctor": {"exit": int(doctor_rc), "report": load("doctor.json")},
    "roundtrip": {"exit": int(rt_rc), "report": load("roundtrip.json")},
    "pytest": {"exit": int(pytest_rc), "tests": tests},
    "cgroups_left": left.split(),
}
(job / "results.json").write_text(json.dumps(results, indent=2))
lines = [f"guest kernel {results['kernel']}, cgroup v2 only: {results['cgroup2_only']}, "
         f"controllers: {controllers}",
         f"doctor: exit {doctor_rc}", f"round trip: exit {rt_rc}",
         f"pytest: exit {pytest_rc}, " + ", ".join(
             f"{sum(1 for t in tests.values() if t['outcome'] == o)} {o}"
             for o in ("passed", "failure", "error", "skipped"))]
lines += [f"  {t['outcome']:8} {name}" for name, t in tests.items()]
lines.append(f"cgroups left: {left or 'none'}")
(job / "summary.txt").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
step "done"
sync
