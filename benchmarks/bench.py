# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmarks of smarthost.postfix (issue 7), driven by benchmarks/run.sh.

    bench.py measure   run every phase (on containers, the last three on this machine),
                       write benchmarks/results/results.json
    bench.py report    write docs/performance.md from results.json

Each phase stores its runs as it finishes them, so a phase that fails leaves
the others' figures and its own error in the report. Counts come from the
BENCH_* environment variables (see COUNTS).
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
import traceback

import pacing  # benchmarks/pacing.py

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH_DIR = os.path.join(REPO, "benchmarks")
STATE = os.path.join(BENCH_DIR, "results")
# The pacing phase runs beside the others in a process of its own, which keeps its figures apart.
RESULTS = os.environ.get("BENCH_RESULTS") or os.path.join(STATE, "results.json")
REPORT = os.path.join(REPO, "docs", "performance.md")
NETWORK = "smarthost-bench"
EMULATOR = "smarthost-emulator-bench"
EMULATOR_STATE = os.path.join(STATE, "emulator")
RECORDS = os.path.join(EMULATOR_STATE, "records", "messages.jsonl")
IMAGE = "smarthost-postfix/debian:12"
CACHED_IMAGE = "smarthost-postfix/debian:12-postfix-cached"
LABEL = "smarthost-bench=1"
VENV_BIN = os.path.join(REPO, ".venv", "bin")

COUNTS = {
    "converge_runs": int(os.environ.get("BENCH_CONVERGE_RUNS", "3")),
    "noop_runs": int(os.environ.get("BENCH_NOOP_RUNS", "5")),
    "fleet_runs": int(os.environ.get("BENCH_FLEET_RUNS", "2")),
    "fleet_sizes": [int(n) for n in os.environ.get("BENCH_FLEET_SIZES", "1,4,8,16").split(",")],
    "relay_runs": int(os.environ.get("BENCH_RELAY_RUNS", "3")),
    "relay_messages": [int(n) for n in os.environ.get("BENCH_RELAY_MESSAGES", "1000,5000").split(",")],
    # Simulated round-trip times between relay and smarthost (benchmarks/netdelay.py), milliseconds.
    "relay_rtts": [int(n) for n in os.environ.get("BENCH_RELAY_RTTS", "0,20").split(",")],
    "rate_runs": int(os.environ.get("BENCH_RATE_RUNS", "1")),
    "rate_messages": int(os.environ.get("BENCH_RATE_MESSAGES", "1000")),
    "profile_messages": int(os.environ.get("BENCH_PROFILE_MESSAGES", "5000")),
    "smtp_source_sessions": 10,
    "message_bytes": 2000,
    "forks": 16,
}
SES_RATE = 14.0

# Role settings per configuration (the SES preset as shipped against the emulator, plus these).
# Converged in this order, each snapshot of /etc/postfix taken after its converge. "paced" comes last:
# its transport map asks the pace map service, which a later unpaced converge stops and removes, and a
# snapshot switched back in brings back /etc/postfix only (every message was deferred that way).
ROLE_CONFIGS = {
    # Unthrottled: the sandbox's 1 msg/s pacing off, everything else as shipped (TLS connection reuse on).
    "preset": {"relay_max_send_rate": 0},
    # No pacing at all, one connection at a time: the least an unpaced relay can send.
    "unpaced": {"relay_max_send_rate": 0, "relay_destination_concurrency_limit": 1},
    # An account with SES's default production rate, as an operator would set it.
    "paced": {"relay_max_send_rate": SES_RATE},
}

# The guides' configuration: relayhost, SASL and `encrypt`, Debian's defaults otherwise.
PLAIN_GUIDE = [
    "relayhost = [email-smtp.us-east-1.amazonaws.com]:587",
    "smtp_sasl_auth_enable = yes",
    "smtp_sasl_password_maps = hash:/etc/postfix/sasl_passwd",
    "smtp_sasl_security_options = noanonymous",
    "smtp_tls_security_level = encrypt",
]


# ------------------------------------------------------------------ plumbing
def log(message):
    print("%s: %s" % (os.environ.get("BENCH_LOG_NAME", "bench"), message), flush=True)


def run(cmd, check=True, env=None, timeout=None):
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    if check and result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
        raise RuntimeError("%s failed (%d):\n%s" % (" ".join(cmd[:4]), result.returncode, tail))
    return result


def dexec(container, script, check=True, timeout=None):
    return run(["docker", "exec", container, "bash", "-c", script], check=check, timeout=timeout)


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def percentile(values, fraction):
    ordered = sorted(values)
    if not ordered:
        return None
    index = min(len(ordered) - 1, max(0, int(round(fraction * len(ordered) + 0.5)) - 1))
    return ordered[index]


def load_results():
    if os.path.exists(RESULTS):
        with open(RESULTS, encoding="utf-8") as handle:
            return json.load(handle)
    return {}


def save_results(results):
    tmp = RESULTS + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=1, sort_keys=True)
    os.replace(tmp, RESULTS)


SHIM_DIR = os.path.join(STATE, "docker-shim")


def docker_shim():
    """A `docker` first in PATH that logs each call and runs the real one: the connection plugin's
    round trips to the hosts are its `docker exec` calls."""
    real = shutil.which("docker", path=os.environ.get("PATH", "").replace(SHIM_DIR + os.pathsep, ""))
    os.makedirs(SHIM_DIR, exist_ok=True)
    path = os.path.join(SHIM_DIR, "docker")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write('#!/bin/sh\n[ -n "$BENCH_DOCKER_LOG" ] && echo "$1" >> "$BENCH_DOCKER_LOG"\nexec %s "$@"\n' % real)
    os.chmod(path, 0o755)
    return SHIM_DIR


def ansible_env(count_file=None, pipelining=True, docker_log=None):
    """The same settings for every timed run, the floor included: docker exec with pipelining."""
    env = dict(os.environ)
    env.update(
        {
            "ANSIBLE_PIPELINING": "1" if pipelining else "0",
            "PATH": (docker_shim() + os.pathsep if docker_log else "") + VENV_BIN + os.pathsep + env.get("PATH", ""),
            "ANSIBLE_COLLECTIONS_PATH": os.path.join(REPO, ".build", "collections"),
            "ANSIBLE_CALLBACK_PLUGINS": os.path.join(BENCH_DIR, "callback_plugins"),
            "ANSIBLE_CALLBACKS_ENABLED": "bench_count",
            "ANSIBLE_FORKS": str(COUNTS["forks"]),
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
            "ANSIBLE_DEPRECATION_WARNINGS": "0",
        }
    )
    env.pop("BENCH_COUNT_FILE", None)
    env.pop("BENCH_DOCKER_LOG", None)
    if count_file:
        env["BENCH_COUNT_FILE"] = count_file
    if docker_log:
        env["BENCH_DOCKER_LOG"] = docker_log
    return env


def providers():
    with open(os.path.join(REPO, "tests", "emulator", "providers.json"), encoding="utf-8") as handle:
        return json.load(handle)["providers"]


GROUP = "smarthost_ses"
PLAYBOOK = os.path.join(REPO, "playbooks", "ses.yml")


def write_inventory(name, hosts, role_vars=None):
    """A YAML (JSON) inventory: the hosts in the group playbooks/ses.yml serves, with the emulator's SES login."""
    ses = providers()["ses"]
    group_vars = {
        "relay_provider": "ses",
        "relay_ses_region": "us-east-1",
        # Fake, public test credentials of the emulator (tests/emulator/providers.json).
        "relay_username": ses["username"],
        "relay_password": ses["password"],
        "relay_sender_domain": "example.test",
    }
    group_vars.update(role_vars or {})
    inventory = {
        "all": {
            "vars": {"ansible_connection": "community.docker.docker", "ansible_python_interpreter": "/usr/bin/python3"},
            "children": {GROUP: {"hosts": {host: None for host in hosts}, "vars": group_vars}},
        }
    }
    path = os.path.join(STATE, "inventory-%s.yml" % name)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(inventory, handle, indent=1)
    return path


def playbook(inventory, extra_vars=None, check=False, count_file=None, pipelining=True, path=PLAYBOOK, docker_log=None):
    """Seconds one run of the shipped playbooks/ses.yml takes (wall clock, process start to exit)."""
    cmd = [os.path.join(VENV_BIN, "ansible-playbook"), "-i", inventory, path]
    if extra_vars:
        cmd += ["-e", json.dumps(extra_vars)]
    if check:
        cmd.append("--check")
    start = time.monotonic()
    run(cmd, env=ansible_env(count_file, pipelining, docker_log))
    return time.monotonic() - start


def adhoc(inventory, module, pipelining=True, docker_log=None):
    cmd = [os.path.join(VENV_BIN, "ansible"), "-i", inventory, GROUP, "-m", module]
    start = time.monotonic()
    run(cmd, env=ansible_env(pipelining=pipelining, docker_log=docker_log))
    return time.monotonic() - start


def costed(function, *args, **kwargs):
    """{seconds, controller CPU seconds, docker exec calls} of one ansible run."""
    log_path = os.path.join(STATE, "docker-calls.log")
    with open(log_path, "w", encoding="utf-8"):
        pass
    before = controller_cpu_seconds()
    seconds = function(*args, docker_log=log_path, **kwargs)
    cpu = controller_cpu_seconds() - before
    with open(log_path, encoding="utf-8") as handle:
        calls = handle.read().split()
    return {
        "seconds": round(seconds, 3),
        "controller_cpu": round(cpu, 3),
        "docker_exec": calls.count("exec"),
        "docker_calls": len(calls),
    }


# Playbooks that cost what the no-op cannot avoid: ansible-playbook itself and one or two module
# round trips, and what twelve skipped tasks add (a no-op skips eleven: eight in the role, three in
# the site playbook).
FLOOR_PLAYBOOKS = {
    "playbook_one_call": [{"name": "One module call", "ansible.builtin.ping": None}],
    "playbook_two_calls": [
        {"name": "First module call", "ansible.builtin.ping": None},
        {"name": "Second module call", "ansible.builtin.ping": None},
    ],
    "playbook_one_call_12_skipped": [{"name": "One module call", "ansible.builtin.ping": None}]
    + [
        {"name": "Skipped task %d" % number, "ansible.builtin.debug": {"msg": "never"}, "when": False}
        for number in range(1, 13)
    ],
}


def floor_playbook(name):
    path = os.path.join(STATE, "%s.yml" % name)
    with open(path, "w", encoding="utf-8") as handle:
        play = {"name": name, "hosts": GROUP, "gather_facts": False, "tasks": FLOOR_PLAYBOOKS[name]}
        json.dump([play], handle, indent=1)
    return path


def start_hosts(names, image, network=NETWORK):
    for name in names:
        run(["docker", "rm", "-f", "-v", name], check=False)
        run(
            [
                "docker",
                "run",
                "-d",
                "--name",
                name,
                "--hostname",
                name + ".example.test",
                "--network",
                network,
                "--cgroupns",
                "host",
                "-v",
                "/sys/fs/cgroup:/sys/fs/cgroup:rw",
                "--tmpfs",
                "/run",
                "--tmpfs",
                "/run/lock",
                "--label",
                LABEL,
                image,
            ]
        )
    # systemd must be up before the role talks to it; on a loaded machine boot takes minutes.
    deadline = time.monotonic() + 300
    for name in names:
        while True:
            state = dexec(name, "systemctl is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                break
            if dexec(name, "systemctl is-active basic.target", check=False).stdout.strip() == "active":
                break
            if time.monotonic() > deadline:
                raise RuntimeError("%s: systemd did not come up (%s)" % (name, state))
            time.sleep(0.3)


def trust_test_ca(names):
    """The role probes the smarthost before it switches: hosts must trust the emulator's test CA (untimed)."""
    ca = os.path.join(EMULATOR_STATE, "certs", "ca.crt")
    if not os.path.exists(ca):
        return
    for name in names:
        run(["docker", "cp", ca, "%s:/usr/local/share/ca-certificates/smarthost-test-ca.crt" % name])
        dexec(name, "update-ca-certificates >/dev/null")


def remove_hosts(names):
    if names:
        run(["docker", "rm", "-f", "-v"] + list(names), check=False)


def cpu_seconds(container):
    """CPU time a container used so far (cgroup v1 or v2), or None where the cgroup is not found."""
    cid = run(["docker", "inspect", "-f", "{{.Id}}", container]).stdout.strip()
    for path, scale in (
        ("/sys/fs/cgroup/cpuacct/docker/%s/cpuacct.usage" % cid, 1e-9),
        ("/sys/fs/cgroup/system.slice/docker-%s.scope/cpu.stat" % cid, 1e-6),
        ("/sys/fs/cgroup/docker/%s/cpu.stat" % cid, 1e-6),
    ):
        try:
            with open(path, encoding="ascii") as handle:
                text = handle.read()
        except OSError:
            continue
        if path.endswith("cpu.stat"):
            match = re.search(r"^usage_usec (\d+)", text, re.M)
            return int(match.group(1)) * scale if match else None
        return int(text.strip()) * scale
    return None


def cpu_pressure_seconds():
    """Seconds in which some runnable task on this machine waited for a CPU (PSI, /proc/pressure/cpu), or None.

    Its growth over a run, divided by the run's wall time, is the share of the run during which something
    waited: on a machine shared with other work, that is what a latency-bound run pays for most.
    """
    try:
        with open("/proc/pressure/cpu", encoding="ascii") as handle:
            match = re.search(r"^some .*total=(\d+)", handle.read(), re.M)
    except OSError:
        return None
    return int(match.group(1)) / 1e6 if match else None


def controller_cpu_seconds():
    """User and system CPU of every finished child of this process (ansible-playbook and its workers)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def source_revision():
    """The commit measured, marked +uncommitted where tracked files differ from it (docs/ aside: the
    pages generated from results change nothing that is measured)."""
    commit = run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], check=False).stdout.strip()
    dirty = run(
        ["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no", "--", ".", ":!docs"], check=False
    ).stdout.strip()
    return (commit + ("+uncommitted" if dirty else "")) if commit else None


def phase(results, name, function):
    log("phase %s" % name)
    start = time.monotonic()
    # Other work on the machine shows here: the ratios within a run are what count.
    results.setdefault(name, {})["load_average_at_start"] = [round(value, 2) for value in os.getloadavg()]
    results[name]["commit"] = source_revision()
    try:
        function(results)
    # A broken phase must not cost the others their figures.
    except Exception as error:  # pylint: disable=broad-exception-caught
        results.setdefault(name, {})["error"] = "%s: %s" % (type(error).__name__, error)
        log("phase %s FAILED: %s" % (name, error))
        traceback.print_exc()
    results.setdefault(name, {})["phase_seconds"] = round(time.monotonic() - start, 1)
    save_results(results)


# ------------------------------------------------------------------ 1-3, 7: one host
def phase_converge(results):
    """Fresh converge with and without the packages cached, then no-op, check mode and the floor."""
    data = results.setdefault("single_host", {})
    data.setdefault("runs", [])
    host = "bench-single"
    inventory = write_inventory("single", [host])
    runs = COUNTS["converge_runs"]
    for index in range(runs):
        for kind, image in (("not_cached", IMAGE), ("cached", CACHED_IMAGE)):
            start_hosts([host], image)
            trust_test_ca([host])
            seconds = playbook(inventory)
            data["runs"].append({"run": index + 1, "fresh_converge": kind, "seconds": round(seconds, 2)})
            log("fresh converge (%s) run %d: %.1fs" % (kind, index + 1, seconds))
            save_results(results)
    # The last host (cached image, converged) is the subject of the no-op runs.
    data["rate_delay_as_shipped"] = dexec(host, "postconf -h smtp_destination_rate_delay").stdout.strip()
    data["tls_connection_reuse_as_shipped"] = dexec(host, "postconf -h smtp_tls_connection_reuse").stdout.strip()
    data["postfix_version"] = dexec(host, "postconf -h mail_version").stdout.strip()
    floor = data.setdefault("floor_runs", [])
    for index in range(COUNTS["noop_runs"]):
        count_noop = os.path.join(STATE, "count-noop.json")
        count_check = os.path.join(STATE, "count-check.json")
        entry = {"run": index + 1, "costs": {}}
        for name, function, args, kwargs in (
            ("ping", adhoc, (inventory, "ping"), {}),
            ("setup", adhoc, (inventory, "setup"), {}),
            ("noop", playbook, (inventory,), {"count_file": count_noop}),
            ("check", playbook, (inventory,), {"check": True, "count_file": count_check}),
        ):
            entry["costs"][name] = costed(function, *args, **kwargs)
            entry[name] = round(entry["costs"][name]["seconds"], 2)
        for name in FLOOR_PLAYBOOKS:
            entry["costs"][name] = costed(playbook, inventory, path=floor_playbook(name))
        with open(count_noop, encoding="utf-8") as handle:
            noop_counts = json.load(handle)
        with open(count_check, encoding="utf-8") as handle:
            check_counts = json.load(handle)
        # The same connection without pipelining: every module call then also copies its payload over.
        entry["setup_no_pipelining"] = round(adhoc(inventory, "setup", pipelining=False), 2)
        entry["noop_no_pipelining"] = round(playbook(inventory, pipelining=False), 2)
        entry["noop_changed"] = noop_counts["results"].get("changed", 0)
        entry["check_changed"] = check_counts["results"].get("changed", 0)
        floor.append(entry)
        data.setdefault("noop_timelines", []).append(
            {"marks": noop_counts.get("marks"), "timeline": noop_counts.get("timeline")}
        )
        data["counts_noop"] = {key: value for key, value in noop_counts.items() if key not in ("marks", "timeline")}
        data["counts_check"] = {key: value for key, value in check_counts.items() if key not in ("marks", "timeline")}
        log("no-op run %d: %s" % (index + 1, entry))
        save_results(results)
    remove_hosts([host])


# ------------------------------------------------------------------ 4: fleet
def phase_fleet(results):
    data = results.setdefault("fleet", {})
    data.setdefault("runs", [])
    for index in range(COUNTS["fleet_runs"]):
        for size in COUNTS["fleet_sizes"]:
            hosts = ["bench-fleet-%02d" % number for number in range(1, size + 1)]
            inventory = write_inventory("fleet-%d" % size, hosts)
            start_hosts(hosts, CACHED_IMAGE)
            trust_test_ca(hosts)
            # All hosts in one batch: the playbook's canary batches are a rollout policy, not a cost of the collection.
            one_batch = {"relay_rollout_serial": ["100%"]}
            try:

                def cpu_of(converge):
                    """Seconds and the CPU a converge cost: the controller's processes and every target container."""
                    hosts_before = sum(cpu_seconds(host) or 0.0 for host in hosts)
                    controller_before = controller_cpu_seconds()
                    seconds = converge()
                    return seconds, {
                        "controller": round(controller_cpu_seconds() - controller_before, 2),
                        "hosts": round(sum(cpu_seconds(host) or 0.0 for host in hosts) - hosts_before, 2),
                    }

                fresh, cpu = cpu_of(lambda: playbook(inventory, extra_vars=one_batch))
                noop, noop_cpu = cpu_of(lambda: playbook(inventory, extra_vars=one_batch))
            finally:
                remove_hosts(hosts)
            data["runs"].append(
                {
                    "run": index + 1,
                    "hosts": size,
                    "fresh": round(fresh, 2),
                    "noop": round(noop, 2),
                    "fresh_cpu_seconds": cpu,
                    "noop_cpu_seconds": noop_cpu,
                }
            )
            log("fleet run %d, %d hosts: fresh %.1fs, no-op %.1fs" % (index + 1, size, fresh, noop))
            save_results(results)


# ------------------------------------------------------------------ 5-6: relay
RELAY_HOST = "bench-relay"
CONFIGS = "/root/bench-configs"
# The preset with one setting changed, measured at the simulated round-trip times only.
RELAY_VARIANTS = {"preset_c50": ["smtp_destination_concurrency_limit = 50"]}


def prepare_relay_host(data):
    """bench-relay converged by the role in each configuration, snapshots of /etc/postfix per configuration."""
    start_hosts([RELAY_HOST], CACHED_IMAGE)
    inventory = write_inventory("relay", [RELAY_HOST])
    start_emulator(inventory)
    # Every Postfix log line must reach the journal: latency comes from its delay= fields.
    dexec(
        RELAY_HOST,
        "mkdir -p /etc/systemd/journald.conf.d && "
        "printf '[Journal]\\nRateLimitIntervalSec=0\\nRateLimitBurst=0\\n' "
        "> /etc/systemd/journald.conf.d/bench.conf && "
        "systemctl restart systemd-journald",
    )
    data["cpusets"] = pin_cpus()
    for name, role_vars in ROLE_CONFIGS.items():
        playbook(inventory, extra_vars=role_vars)
        dexec(
            RELAY_HOST,
            "mkdir -p %s && rm -rf %s/%s && cp -a /etc/postfix %s/%s" % (CONFIGS, CONFIGS, name, CONFIGS, name),
        )
        data.setdefault("postconf_n", {})[name] = dexec(RELAY_HOST, "postconf -n").stdout.splitlines()
    # The plain guide configuration: Debian's template, the package's master.cf, five settings.
    settings = " ".join("'%s'" % line for line in PLAIN_GUIDE)
    dexec(
        RELAY_HOST,
        "set -e; d=%s; rm -rf $d/plain $d/intake; cp -a $d/preset $d/plain; "
        "cp /usr/share/postfix/main.cf.debian $d/plain/main.cf; "
        "cp /usr/share/postfix/master.cf.dist $d/plain/master.cf; "
        "postconf -c $d/plain -e %s; postalias /etc/aliases; "
        # Local intake: the throughput configuration with every message discarded after the queue.
        "cp -a $d/preset $d/intake; postconf -c $d/intake -e default_transport=discard:intake" % (CONFIGS, settings),
    )
    # Variants of the preset measured over the simulated network: what a role default would change.
    for name, settings in RELAY_VARIANTS.items():
        dexec(
            RELAY_HOST,
            "set -e; d=%s; rm -rf $d/%s; cp -a $d/preset $d/%s; postconf -c $d/%s -e %s"
            % (CONFIGS, name, name, name, " ".join("'%s'" % item for item in settings)),
        )
    for name in ("plain", "intake") + tuple(RELAY_VARIANTS):
        data.setdefault("postconf_n", {})[name] = dexec(
            RELAY_HOST, "postconf -c %s/%s -n | grep -v '^config_directory'" % (CONFIGS, name)
        ).stdout.splitlines()


def pin_cpus():
    """The target on one core, the emulator on the other, as if the smarthost ran elsewhere.

    On a shared pair of cores the Python emulator's TLS work would be taken from the very host
    being measured, and the configuration that makes the emulator work hardest would pay twice.
    """
    cpus = os.cpu_count() or 1
    if cpus < 2:
        return None
    pinned = {"target": "0", "emulator": "1-%d" % (cpus - 1) if cpus > 2 else "1"}
    run(["docker", "update", "--cpuset-cpus", pinned["target"], RELAY_HOST])
    run(["docker", "update", "--cpuset-cpus", pinned["emulator"], EMULATOR])
    return pinned


def start_emulator(inventory):
    """The harness's prepare.yml: the emulator on smarthost-bench under the providers' names, the test CA on
    the hosts."""
    run(
        [
            os.path.join(VENV_BIN, "ansible-playbook"),
            "-i",
            inventory,
            os.path.join(REPO, "molecule", "resources", "playbooks", "prepare.yml"),
            "-e",
            "emulator_project_dir=%s" % REPO,
            "-e",
            "emulator_state_dir=%s" % EMULATOR_STATE,
            "-e",
            "emulator_scenario=bench",
        ],
        env=ansible_env(),
    )


def switch_config(name):
    dexec(
        RELAY_HOST,
        "systemctl stop postfix@- postfix; rm -rf /etc/postfix; cp -a %s/%s /etc/postfix; "
        "postsuper -d ALL >/dev/null 2>&1; systemctl reset-failed postfix@- postfix 2>/dev/null; "
        "systemctl start postfix; "
        "for i in $(seq 100); do ss -ltn | grep -q ':25 ' && exit 0; sleep 0.1; done; exit 1" % (CONFIGS, name),
    )


def emulator(command, container=EMULATOR):
    return run(["docker", "exec", container, "sh", "-c", "emulatorctl " + command]).stdout


def read_records(path=RECORDS):
    try:
        with open(path, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.endswith("\n") and line.strip()]
    except FileNotFoundError:
        return []


def wait_for_records(count, timeout, stall=30.0, path=RECORDS):
    """The emulator's records once `count` arrived, the timeout passed, or nothing new came for `stall` seconds."""
    deadline = time.monotonic() + timeout
    seen, last_change = -1, time.monotonic()
    while True:
        records = read_records(path)
        now = time.monotonic()
        if len(records) != seen:
            seen, last_change = len(records), now
        if len(records) >= count or now > deadline or now - last_change > stall:
            return records
        time.sleep(0.2)


def journal_cursor():
    out = dexec(RELAY_HOST, "journalctl -n 0 --show-cursor --no-pager").stdout
    match = re.search(r"cursor: (\S+)", out)
    return match.group(1) if match else None


def delivery_delays(cursor, identifier):
    """delay= of every status=sent line a delivery agent logged after the cursor."""
    dexec(RELAY_HOST, "journalctl --sync", check=False)
    after = "--after-cursor='%s'" % cursor if cursor else ""
    out = dexec(RELAY_HOST, "journalctl %s -t %s -o cat --no-pager" % (after, identifier)).stdout
    return [float(m.group(1)) for m in re.finditer(r"delay=([0-9.]+),.*status=sent", out)]


def relay_run(config, messages, wait_timeout, after_switch=None):
    """Submit `messages` with smtp-source on the host's port 25 and time their way to the emulator.

    after_switch() runs once the configuration is in place, before anything is measured.
    """
    switch_config(config)
    if after_switch is not None:
        after_switch()
    emulator("reset")
    cursor = journal_cursor()
    measured = [RELAY_HOST, EMULATOR] + ([PROXY] if _network_state["rtt"] else [])
    cpu_before = {name: cpu_seconds(name) for name in measured}
    pressure_before = cpu_pressure_seconds()
    start = time.time()
    dexec(
        RELAY_HOST,
        "smtp-source -s %d -m %d -l %d -f bench@example.test -t rcpt@example.test 127.0.0.1:25"
        % (COUNTS["smtp_source_sessions"], messages, COUNTS["message_bytes"]),
    )
    submitted = time.time()
    entry = {
        "config": config,
        "messages": messages,
        "submit_seconds": round(submitted - start, 3),
        "submit_rate": round(messages / (submitted - start), 1),
    }
    if config == "intake":
        # Wait until the discard agent has taken everything out of the queue.
        dexec(
            RELAY_HOST,
            'for i in $(seq 600); do [ -z "$(postqueue -j)" ] && exit 0; sleep 0.1; done; exit 1',
            check=False,
        )
        end = time.time()
        entry["delivered"] = messages
        entry["rate"] = round(messages / (submitted - start), 1)
        identifier = "postfix/discard"
    else:
        records = wait_for_records(messages, wait_timeout)
        # All delivered: the emulator's last record ends the run; otherwise the moment the wait gave up.
        end = max(r["ts"] for r in records) if len(records) >= messages else time.time()
        entry["delivered"] = len(records)
        entry["rate"] = round(len(records) / (end - start), 1) if records else 0.0
        counters = json.loads(emulator("counters"))
        entry["emulator_connections"] = counters["connections"]
        entry["emulator_auth"] = counters["auth"]["succeeded"]
        entry["replies_454"] = counters["replies"]["454"]
        identifier = "postfix/smtp"
        entry["tls"] = sorted({"%s %s" % (r.get("tls"), r.get("tls_version")) for r in records})
    wall = max(end - start, 1e-6)
    for name, before in cpu_before.items():
        after = cpu_seconds(name)
        if before is not None and after is not None:
            role = {EMULATOR: "emulator", PROXY: "proxy"}.get(name, "target")
            entry["cpu_%s" % role] = round((after - before) / wall, 2)
    entry["seconds"] = round(end - start, 3)
    pressure_after = cpu_pressure_seconds()
    if pressure_before is not None and pressure_after is not None:
        entry["cpu_pressure"] = round((pressure_after - pressure_before) / wall, 2)
    entry["load_average"] = round(os.getloadavg()[0], 2)
    if entry.get("cpu_target") is not None and entry["delivered"]:
        # What one message costs the target, whatever limited the rate.
        entry["target_ms_per_message"] = round(entry["cpu_target"] * wall * 1000.0 / entry["delivered"], 2)
    delays = delivery_delays(cursor, identifier)
    entry["latency_samples"] = len(delays)
    entry["latency_p50"] = percentile(delays, 0.50)
    entry["latency_p99"] = percentile(delays, 0.99)
    return entry


# A simulated network between the relay and the emulator: bench-netdelay answers under the
# providers' names and forwards to the emulator, which keeps only aliases nobody else uses.
PROXY = "bench-netdelay"
UPSTREAM_ALIAS = "bench-upstream"
_network_state = {"rtt": 0}

RTT_PROBE = r"""
import socket, ssl, statistics, sys, time
host, port, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
greetings, trips = [], []
for _ in range(5):
    start = time.monotonic()
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    stream = sock.makefile("rb")
    stream.readline()
    greetings.append(time.monotonic() - start)
    for _ in range(rounds):
        start = time.monotonic()
        sock.sendall(b"NOOP\r\n")
        stream.readline()
        trips.append(time.monotonic() - start)
    sock.sendall(b"QUIT\r\n")
    sock.close()
trips.sort()
print("%.3f %.3f %.3f %.3f" % (statistics.median(greetings) * 1e3, statistics.median(trips) * 1e3,
                               trips[int(len(trips) * 0.99)] * 1e3, trips[0] * 1e3))
"""


def emulator_aliases():
    return [hostname for item in providers().values() for hostname in item["hostnames"]]


def set_network_delay(rtt_ms, cpuset=None, trace=False):
    """0: the emulator answers under the providers' names itself (as before); otherwise the proxy does."""
    if _network_state["rtt"] == rtt_ms and _network_state.get("trace", False) == trace:
        return
    run(["docker", "rm", "-f", "-v", PROXY], check=False)
    run(["docker", "network", "disconnect", NETWORK, EMULATOR], check=False)
    if rtt_ms:
        run(["docker", "network", "connect", "--alias", "emulator", "--alias", UPSTREAM_ALIAS, NETWORK, EMULATOR])
        ports = ",".join(str(port) for kind in ("starttls", "implicit") for port in listen_ports()[kind])
        aliases = []
        for hostname in emulator_aliases():
            aliases += ["--network-alias", hostname]
        run(
            ["docker", "run", "-d", "--name", PROXY, "--network", NETWORK]
            + aliases
            + (["--cpuset-cpus", cpuset] if cpuset else [])
            + [
                "--label",
                LABEL,
                "--entrypoint",
                "python3",
                "-v",
                "%s:/netdelay.py:ro" % os.path.join(BENCH_DIR, "netdelay.py"),
                IMAGE,
                "/netdelay.py",
                "--upstream",
                UPSTREAM_ALIAS,
                "--ports",
                ports,
                "--delay-ms",
                "%g" % (rtt_ms / 2.0),
            ]
            + (["--trace"] if trace else [])
        )
        deadline = time.monotonic() + 30
        while "listening" not in run(["docker", "logs", PROXY], check=False).stdout:
            if time.monotonic() > deadline:
                raise RuntimeError("%s did not start: %s" % (PROXY, run(["docker", "logs", PROXY], check=False).stderr))
            time.sleep(0.2)
    else:
        command = ["docker", "network", "connect", "--alias", "emulator"]
        for hostname in emulator_aliases():
            command += ["--alias", hostname]
        run(command + [NETWORK, EMULATOR])
    _network_state["rtt"] = rtt_ms
    _network_state["trace"] = trace


def trace_analysis(text, delay):
    """Round trips per message, and where a reused connection's time goes, from netdelay.py --trace.

    A line is `time connection:port direction bytes`, read times at the proxy. A message is a
    client chunk over 1,000 bytes (the 2,000-byte body); a round trip is a client chunk followed by
    the server's answer. "Client" time is from an answer reaching the target (read time + delay)
    to the target's next chunk; "server" time is from a chunk reaching the emulator to its answer.
    """
    connections = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[2] in "<>":
            connections.setdefault(parts[1], []).append((float(parts[0]), parts[2], int(parts[3])))
    if not connections:
        return None
    first = min(events[0][0] for events in connections.values())
    client, server, trips, messages, ramp = [], [], 0, 0, []
    for events in connections.values():
        body = [index for index, event in enumerate(events) if event[1] == ">" and event[2] > 1000]
        messages += len(body)
        if body:
            ramp.append(events[body[0]][0] - first)
        # Steady state: from the connection's first message on.
        steady = events[body[0] :] if body else []
        for previous, event in zip(steady, steady[1:]):
            if previous[1] == ">" and event[1] == "<":
                trips += 1
                server.append(event[0] - previous[0] - delay)
            elif previous[1] == "<" and event[1] == ">":
                client.append(event[0] - previous[0] - delay)
    ramp.sort()
    client.sort()
    return {
        "connections": len(connections),
        "messages": messages,
        "round_trips_per_message": round(trips / messages, 2) if messages else None,
        "client_ms_p50": round(1000 * statistics.median(client), 1) if client else None,
        "client_ms_p90": round(1000 * client[int(len(client) * 0.9)], 1) if client else None,
        "server_ms_p50": round(1000 * statistics.median(server), 1) if server else None,
        "seconds_to_last_new_connection": round(ramp[-1], 2) if ramp else None,
    }


def listen_ports():
    with open(os.path.join(REPO, "tests", "emulator", "providers.json"), encoding="utf-8") as handle:
        return json.load(handle)["listen"]


def measure_rtt(rounds=100):
    """From the relay host to the SES name: connect-to-greeting and NOOP round trips (median, p99, min), ms."""
    out = run(
        [
            "docker",
            "exec",
            RELAY_HOST,
            "python3",
            "-c",
            RTT_PROBE,
            "email-smtp.us-east-1.amazonaws.com",
            "587",
            str(rounds),
        ]
    ).stdout.split()
    return dict(zip(("greeting_ms", "noop_p50_ms", "noop_p99_ms", "noop_min_ms"), (float(value) for value in out)))


def phase_relay(results):
    data = results.setdefault("relay", {})
    data.setdefault("runs", [])
    reuse = os.environ.get("BENCH_REUSE_RELAY") == "1"
    if reuse and dexec(RELAY_HOST, "test -d %s/intake" % CONFIGS, check=False).returncode == 0:
        data["postconf_n"] = load_results().get("relay", {}).get("postconf_n", {})
    else:
        prepare_relay_host(data)
    cpusets = data.get("cpusets") or {}
    data["rtt_probe"] = {}
    try:
        for index in range(COUNTS["relay_runs"]):
            for rtt in COUNTS["relay_rtts"]:
                set_network_delay(rtt, cpuset=cpusets.get("emulator"))
                if str(rtt) not in data["rtt_probe"]:
                    data["rtt_probe"][str(rtt)] = measure_rtt()
                    log("network at %d ms: %s" % (rtt, data["rtt_probe"][str(rtt)]))
                for messages in COUNTS["relay_messages"]:
                    for config in ("intake", "plain", "preset") + (tuple(RELAY_VARIANTS) if rtt else ()):
                        entry = relay_run(config, messages, wait_timeout=60 + messages / 20.0)
                        entry["run"] = index + 1
                        entry["rtt_ms"] = rtt
                        data["runs"].append(entry)
                        log(
                            "relay run %d, %d ms, %s %d: %.0f msg/s p50 %s p99 %s"
                            % (
                                index + 1,
                                rtt,
                                config,
                                messages,
                                entry["rate"],
                                entry["latency_p50"],
                                entry["latency_p99"],
                            )
                        )
                        save_results(results)
        # One traced run per simulated network: how many round trips a message takes, and who waits.
        for rtt in [value for value in COUNTS["relay_rtts"] if value]:
            set_network_delay(rtt, cpuset=cpusets.get("emulator"), trace=True)
            entry = relay_run("preset", min(COUNTS["relay_messages"]), wait_timeout=120)
            analysis = trace_analysis(run(["docker", "logs", PROXY], check=False).stderr, rtt / 2000.0)
            data.setdefault("traces", {})[str(rtt)] = dict(
                analysis or {},
                rate=entry["rate"],
                cpu_target=entry.get("cpu_target"),
                cpu_pressure=entry.get("cpu_pressure"),
            )
            log("traced preset run at %d ms: %s" % (rtt, data["traces"][str(rtt)]))
            save_results(results)
    finally:
        set_network_delay(0)


PROC_TICKS = r"""for p in /proc/[0-9]*; do s=$(cat $p/stat 2>/dev/null) && echo "${p#/proc/} $s"; done"""


def process_ticks():
    """{pid: (command, user+system clock ticks)} of every process on the relay host."""
    ticks = {}
    for line in dexec(RELAY_HOST, PROC_TICKS).stdout.splitlines():
        pid, rest = line.split(" ", 1)
        fields = rest[rest.rindex(")") + 2 :].split()
        ticks[pid] = (rest[rest.index("(") + 1 : rest.rindex(")")], int(fields[11]) + int(fields[12]))
    return ticks


def profile_run(config, messages):
    """CPU per message by process name, for one run where Postfix's daemons live through the run.

    Daemons normally exit after 100 uses, and an exited process's time is lost to a snapshot of
    /proc; max_use is raised for this run only, so the split is a little kinder than the timed runs.
    """
    hz = int(dexec(RELAY_HOST, "getconf CLK_TCK").stdout.strip() or 100)
    state = {}

    def keep_daemons_and_snapshot():
        dexec(RELAY_HOST, "postconf -e max_use=100000 max_idle=1000s && postfix reload >/dev/null 2>&1 && sleep 2")
        state["before"] = process_ticks()

    entry = relay_run(config, messages, wait_timeout=60 + messages / 20.0, after_switch=keep_daemons_and_snapshot)
    spent = {}
    for pid, (command, ticks) in process_ticks().items():
        spent[command] = spent.get(command, 0) + ticks - state["before"].get(pid, (command, 0))[1]
    per_message = {command: round(ticks * 1000.0 / hz / messages, 3) for command, ticks in spent.items() if ticks > 0}
    return {
        "config": config,
        "messages": messages,
        "rate": entry["rate"],
        "ms_per_message": dict(sorted(per_message.items(), key=lambda item: -item[1])),
    }


def phase_profile(results):
    data = results.setdefault("profile", {})
    if dexec(RELAY_HOST, "test -d %s/intake" % CONFIGS, check=False).returncode != 0:
        raise RuntimeError("the relay phase did not prepare bench-relay")
    data["runs"] = [profile_run(config, COUNTS["profile_messages"]) for config in ("intake", "plain", "preset")]
    for item in data["runs"]:
        log("profile %s: %s" % (item["config"], item["ms_per_message"]))


def phase_rate(results):
    """SES's 14 msg/s enforced by the emulator: the paced preset, and an unpaced relay for comparison."""
    data = results.setdefault("rate", {})
    data.setdefault("runs", [])
    if not os.path.exists(RECORDS) or dexec(RELAY_HOST, "test -d %s/paced" % CONFIGS, check=False).returncode != 0:
        raise RuntimeError("the relay phase did not prepare bench-relay")
    messages = COUNTS["rate_messages"]
    emulator("mode rate_limit --rate %g" % SES_RATE)
    data["emulator_mode"] = json.loads(emulator("show-mode"))
    try:
        for index in range(COUNTS["rate_runs"]):
            for config in ("unpaced", "paced"):
                # Paced is one message a second (see docs/performance.md); give it that long and a margin.
                timeout = messages * 1.2 + 60 if config == "paced" else 120
                entry = relay_run(config, messages, wait_timeout=timeout)
                entry["run"] = index + 1
                entry["allowed_rate"] = SES_RATE
                entry["rate_fraction"] = round(entry["rate"] / SES_RATE, 3)
                entry["queue_left"] = int(dexec(RELAY_HOST, "postqueue -j | wc -l").stdout.strip() or 0)
                data["runs"].append(entry)
                if not entry["delivered"]:
                    # A relay that delivers nothing is a broken setup, not a rate: say so, not 0 msg/s.
                    save_results(results)
                    raise RuntimeError("rate run %d %s delivered nothing" % (index + 1, config))
                log(
                    "rate run %d %s: %d delivered, %.2f msg/s, %d x 454"
                    % (index + 1, config, entry["delivered"], entry["rate"], entry["replies_454"])
                )
                save_results(results)
    finally:
        emulator("mode normal")


# ------------------------------------------------------------------ 8: pacing at a provider's rate
# Debian 12 (Postfix 3.7) and Debian 13 (Postfix 3.10), each against an emulator of its own on a
# network of its own under the same provider names, apart from the one the other phases reset and
# reconfigure: both run at once, beside those phases, as a paced run is long and costs little CPU.
PACING_HOSTS = {
    "12": (
        "bench-pace12",
        NETWORK + "-c",
        EMULATOR + "-c",
        os.path.join(EMULATOR_STATE, "records-c", "messages.jsonl"),
    ),
    "13": (
        "bench-pace13",
        NETWORK + "-b",
        EMULATOR + "-b",
        os.path.join(EMULATOR_STATE, "records-b", "messages.jsonl"),
    ),
}
PACING_BASE = "/root/bench-base"
# docker's default CPU weight is 1024.
PACING_CPU_SHARES = 8192
# The presets' rates on the bench relay. Office 365: 30 messages a minute per mailbox (0.5/s); Gmail:
# a daily quota and no rate published, so the preset does not pace (rate 0) and the emulator limits nothing.
PRESET_PACING = {"office365": {"rate": 0.5, "messages": 40}, "gmail": {"rate": 0, "messages": 20}}


def cached_image(version):
    return "smarthost-postfix/debian:%s-postfix-cached" % version


def start_pacing_emulator(network, container, records_path):
    """The emulator image once more, on its own network under every provider hostname (as prepare.yml does)."""
    run(["docker", "rm", "-f", "-v", container], check=False)
    run(["docker", "network", "create", network], check=False)
    os.makedirs(os.path.dirname(records_path), exist_ok=True)
    aliases = []
    for item in providers().values():
        for hostname in item["hostnames"]:
            aliases += ["--network-alias", hostname]
    run(
        ["docker", "run", "-d", "--name", container, "--network", network]
        + aliases
        + [
            "--label",
            LABEL,
            "-v",
            "%s:/etc/emulator/certs:ro" % os.path.join(EMULATOR_STATE, "certs"),
            "-v",
            "%s:/var/lib/emulator" % os.path.dirname(records_path),
            "smarthost-postfix/emulator:latest",
        ]
    )
    deadline = time.monotonic() + 60
    while (
        "listening"
        not in run(["docker", "logs", container], check=False).stdout
        + run(["docker", "logs", container], check=False).stderr
    ):
        if time.monotonic() > deadline:
            raise RuntimeError("%s did not start listening" % container)
        time.sleep(0.5)
    emulator("reset", container)
    emulator("mode normal", container)


def postfix_journal(host, cursor):
    dexec(host, "journalctl --sync", check=False)
    after = "--after-cursor='%s'" % cursor if cursor else ""
    return dexec(host, "journalctl %s -o short-unix --no-pager SYSLOG_FACILITY=2" % after).stdout.splitlines()


def host_cursor(host):
    match = re.search(r"cursor: (\S+)", dexec(host, "journalctl -n 0 --show-cursor --no-pager").stdout)
    return match.group(1) if match else None


def postconf_assignments(settings):
    """main.cf settings as `postconf -e` arguments, quoted for the shell."""
    return " ".join("'%s=%s'" % item for item in sorted(settings.items()))


def apply_pacing(host, delays, recipient_limit):
    """The converged configuration back in place, then the clones and their randmap on top."""
    # Clones run like the smtp service they copy (chrooted on Debian).
    chroot = dexec(host, "postconf -c %s -M smtp/unix" % PACING_BASE).stdout.split()[4]
    main_cf, master_cf = pacing.settings(delays, recipient_limit=recipient_limit, chroot=chroot)
    dexec(
        host,
        "set -e; systemctl stop postfix; rm -rf /etc/postfix; cp -a %s /etc/postfix; "
        "printf '%%s\\n' %s >> /etc/postfix/master.cf; postconf -e %s; "
        "postsuper -d ALL >/dev/null 2>&1 || true; systemctl reset-failed postfix@- postfix 2>/dev/null || true; "
        "systemctl start postfix; for i in $(seq 100); do ss -ltn | grep -q ':25 ' && exit 0; sleep 0.1; done; exit 1"
        % (PACING_BASE, " ".join("'%s'" % line for line in master_cf), postconf_assignments(main_cf)),
    )
    return main_cf, master_cf


def max_in_window(stamps, width=1.0):
    stamps = sorted(stamps)
    best, first = 0, 0
    for index, stamp in enumerate(stamps):
        while stamp - stamps[first] >= width:
            first += 1
        best = max(best, index - first + 1)
    return best


def converge_pacing(host, rate, recipient_limit, role_vars=None):
    """The role as shipped, from the unpaced configuration, with relay_max_send_rate: rate."""
    dexec(
        host,
        "set -e; systemctl stop postfix; rm -rf /etc/postfix; cp -a %s /etc/postfix; "
        "postsuper -d ALL >/dev/null 2>&1 || true; systemctl reset-failed postfix@- postfix 2>/dev/null || true; "
        "systemctl start postfix" % PACING_BASE,
    )
    playbook(
        write_inventory("pace-%s" % host, [host]),
        extra_vars=dict(role_vars or {}, relay_max_send_rate=rate, relay_destination_recipient_limit=recipient_limit),
    )


def converged_config(host):
    """What the role's converge changed against the unpaced configuration: main.cf, master.cf, clone list.

    main.cf as `postconf -n` settings that are new or changed; master.cf as the `postconf -M` lines (one
    per service, options inline) that are new or changed; the pace map's list as the role wrote it.
    """

    def main_cf(config_dir):
        lines = dexec(host, "postconf -c %s -n" % config_dir).stdout.splitlines()
        return dict(line.split(" = ", 1) if " = " in line else (line.rstrip(" ="), "") for line in lines)

    def master_cf(config_dir):
        return dexec(host, "postconf -c %s -M" % config_dir).stdout.splitlines()

    # postconf -c reports the directory it read as config_directory: not a setting the role changed.
    before, after = (
        {name: value for name, value in main_cf(directory).items() if name != "config_directory"}
        for directory in (PACING_BASE, "/etc/postfix")
    )
    base_services = set(master_cf(PACING_BASE))
    clones = dexec(host, "cat /etc/postfix/pace_clones 2>/dev/null", check=False).stdout.splitlines()
    return {
        "main_cf": {name: value for name, value in after.items() if before.get(name) != value},
        "main_cf_removed": sorted(name for name in before if name not in after),
        "master_cf": [line for line in master_cf("/etc/postfix") if line not in base_services],
        "pace_clones": clones,
    }


def pacing_run(
    version,
    scenario,
    rate,
    delays,
    messages,
    burst,
    distinct=True,
    recipient_limit=50,
    limit=True,
    shipped=True,
):
    """One burst of `messages` into a host paced by `delays`, against an emulator enforcing `rate`.

    shipped: the role converges relay_max_send_rate (its clones are smtp_pace1..., taken in turn
    from its pace map), and `delays` must be the plan's design; otherwise the design is written by
    hand (clones smtp1..., picked by randmap), for designs the role refuses or does not ship and for
    randmap's random split. The run ends when every message was delivered or
    refused with a 454 (a refused message waits for Postfix's next retry, minutes later), or at the
    deadline.
    """
    host, _network, container, records_path = PACING_HOSTS[version]
    if shipped:
        if delays and list(delays) != pacing.design(rate):
            raise ValueError("a shipped run measures the plan's design for %g/s" % rate)
        converge_pacing(host, rate if delays else 0, recipient_limit)
        try:
            converged = converged_config(host) if delays else None
        except Exception as error:  # pylint: disable=broad-exception-caught  # a figure matters more than its page block
            converged = {"error": "%s: %s" % (type(error).__name__, error)}
        clone = "smtp_pace%d"
    else:
        apply_pacing(host, delays, recipient_limit)
        converged = None
        clone = "smtp%d"
    emulator("reset", container)
    emulator("mode rate_limit --rate %g --burst %g" % (rate, burst) if limit else "mode normal", container)
    cursor = host_cursor(host)
    start = time.time()
    try:
        dexec(
            host,
            "smtp-source %s -s %d -m %d -l %d -f bench@example.test -t rcpt@example.test 127.0.0.1:25"
            % ("-N" if distinct else "", COUNTS["smtp_source_sessions"], messages, COUNTS["message_bytes"]),
        )
        submitted = time.time()
        deadline = time.monotonic() + (messages / pacing.rate_of(delays) * 1.6 if delays else 0) + 120
        while True:
            counters = json.loads(emulator("counters", container))
            if counters["messages"] + counters["replies"]["454"] >= messages or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        # The last deliveries' log lines and records land a moment after the counters.
        time.sleep(1.0)
        counters = json.loads(emulator("counters", container))
    finally:
        emulator("mode normal", container)
    stamps = sorted(record["ts"] for record in read_records(records_path))
    replies_path = os.path.join(os.path.dirname(records_path), "replies.jsonl")
    refused = sorted(record["ts"] for record in read_records(replies_path) if record.get("code") == "454")
    per_clone, delays_seen = {}, []
    for line in postfix_journal(host, cursor):
        match = re.search(r"postfix/(?:(smtp(?:_pace)?\d+)/)?smtp\[\d+\]: .*delay=([0-9.]+),.*status=sent", line)
        if match:
            if match.group(1):
                per_clone[match.group(1)] = per_clone.get(match.group(1), 0) + 1
            delays_seen.append(float(match.group(2)))
    end = stamps[-1] if stamps else time.time()
    seconds = max(end - start, 1e-6)
    designed = pacing.rate_of(delays) if delays else None
    # How long the busiest clone needed: the burst ends when it does.
    clone_seconds = [
        count * delay
        for count, delay in ((per_clone.get(clone % (index + 1), 0), delay) for index, delay in enumerate(delays))
    ]
    entry = {
        "version": version,
        "scenario": scenario,
        "rate": rate,
        "burst": burst,
        "messages": messages,
        "design": pacing.describe(delays) if delays else "no pacing",
        "shipped": shipped,
        # What picked each message's clone: the role's pace map (its default on Debian), or randmap by hand.
        "chooser": ("turns" if shipped else "randmap") if len(delays) > 1 else None,
        "clones": len(delays),
        "designed_rate": round(designed, 4) if designed else None,
        "distinct_recipients": distinct,
        "recipient_limit": recipient_limit,
        "submit_seconds": round(submitted - start, 2),
        "seconds": round(seconds, 2),
        "delivered": len(stamps),
        "replies_454": counters["replies"]["454"],
        "rate_achieved": round(len(stamps) / seconds, 3),
        "fraction": round(len(stamps) / seconds / rate, 3) if rate else None,
        "ideal_seconds": round(messages / designed, 1) if designed else None,
        "busiest_clone_seconds": max(clone_seconds) if clone_seconds else None,
        "per_clone": sorted(per_clone.values()),
        "clones_used": len(per_clone),
        "max_in_1s": max_in_window(stamps),
        "max_in_60s": max_in_window(stamps, 60.0),
        "first_seconds": [sum(1 for stamp in stamps if int(stamp - stamps[0]) == second) for second in range(6)]
        if stamps
        else [],
        # When the 454 replies came, in seconds from the first delivery (the first 50).
        "refused_at": [round(stamp - stamps[0], 2) for stamp in refused[:50]] if stamps else [],
        "tls_sessions": counters["auth"]["succeeded"],
        "connections": counters["connections"],
        # The configuration the role converged for this run (shipped runs only), for the page's config blocks.
        "converged": converged,
        "latency_p50": percentile(delays_seen, 0.50),
        "latency_p99": percentile(delays_seen, 0.99),
        "latency_max": max(delays_seen) if delays_seen else None,
    }
    log(
        "pacing %s %s %g/s burst %g, %d messages (%s): %d delivered, %d x 454, %.2f msg/s = %.0f %%, clones %s"
        % (
            version,
            scenario,
            rate,
            burst,
            messages,
            entry["design"],
            entry["delivered"],
            entry["replies_454"],
            entry["rate_achieved"],
            (entry["fraction"] or 0) * 100,
            entry["per_clone"],
        )
    )
    return entry


def pacing_scenarios():
    """(scenario, rate, delays, messages, burst, options) in the order run on each host."""
    out = []
    rates = [float(value) for value in os.environ.get("BENCH_PACING_RATES", "14,3.5").split(",") if value]
    sizes = [int(value) for value in os.environ.get("BENCH_PACING_MESSAGES", "1000,5000").split(",") if value]
    for rate in rates:
        # A provider enforcing N/s must let ceil(N) messages through in some second (3.5/s is 7 in two).
        burst = math.ceil(rate)
        delays = pacing.design(rate)
        for messages in sizes:
            out.append(("design", rate, delays, messages, burst, {}))
        # SES: "You can exceed this quota for short bursts": the same with two seconds' worth.
        out.append(("design_burst2s", rate, delays, sizes[0], 2 * rate, {}))
        # The same clones picked at random by randmap (relay_pacing_chooser: random, written by hand):
        # what taking them in turn buys on a short burst.
        by_hand = {"shipped": False}
        out.append(("randmap", rate, delays, sizes[0], burst, by_hand))
        if rate == rates[0]:
            out.append(("randmap_burst2s", rate, delays, sizes[0], 2 * rate, by_hand))
        uniform = pacing.uniform_design(rate)
        if uniform != delays:
            out.append(("uniform", rate, uniform, sizes[0], burst, {"shipped": False}))
    if rates:
        first = rates[0]
        # One recipient for the whole burst: the queue manager's resolver cache (30 s) picks one clone.
        out.append(("same_recipient", first, pacing.design(first), 100, math.ceil(first), {"distinct": False}))
        # A recipient limit of 1 makes "a destination a recipient": no pacing at all (postconf(5)).
        # The plan refuses it, so it is written by hand.
        out.append(
            (
                "recipient_limit_1",
                first,
                pacing.design(first),
                300,
                math.ceil(first),
                {"recipient_limit": 1, "shipped": False},
            )
        )
    for name in [value for value in os.environ.get("BENCH_PACING_PRESETS", "office365,gmail").split(",") if value]:
        item = PRESET_PACING[name]
        out.append(
            (
                name,
                item["rate"],
                pacing.design(item["rate"]) if item["rate"] else [],
                item["messages"],
                math.ceil(item["rate"]),
                {"limit": bool(item["rate"])},
            )
        )
    return out


def pacing_host(version, results, lock):
    data = results["pacing"]
    for scenario, rate, delays, messages, burst, options in pacing_scenarios():
        try:
            entry = pacing_run(version, scenario, rate, delays, messages, burst, **options)
        except Exception as error:  # pylint: disable=broad-exception-caught  # keep the other runs
            entry = {
                "version": version,
                "scenario": scenario,
                "rate": rate,
                "messages": messages,
                "error": "%s: %s" % (type(error).__name__, error),
            }
            log("pacing %s %s failed: %s" % (version, scenario, error))
        with lock:
            data["runs"].append(entry)
            save_results(results)


def route_check(data):
    """Clones with sender and domain routes, then with a fallback relay: where each message went.

    The role converges the routes with relay_max_send_rate 14, and one message per case is sent with
    sendmail. The emulator's record names the provider whose credentials logged in; Postfix's log
    names the transport (the clones log as postfix/smtp_paceN/smtp).
    """
    host, _network, container, records_path = PACING_HOSTS["12"]
    found = providers()
    cases = [
        (
            "routes",
            {
                "relay_sender_routes": [
                    {
                        "sender": "@marketing.example.test",
                        "provider": "sendgrid",
                        "password": found["sendgrid"]["password"],
                    }
                ],
                "relay_domain_routes": [
                    {
                        "domain": "partner.example.test",
                        "provider": "mailgun",
                        "username": found["mailgun"]["username"],
                        "password": found["mailgun"]["password"],
                    }
                ],
            },
            None,
            [
                ("bench@example.test", "primary@example.test", "ses", r"smtp_pace\d+"),
                ("news@marketing.example.test", "sender-route@example.test", "sendgrid", r"smtp_pace\d+"),
                # A route's own transport carries no syslog_name: it logs as postfix/smtp, not as a clone.
                ("bench@example.test", "someone@partner.example.test", "mailgun", r"smtp"),
            ],
        ),
        # The fallback takes over when the primary cannot be reached: nothing listens on port 2599.
        (
            "fallback",
            {
                "relay_fallback": {
                    "provider": "custom",
                    "host": found["fallback"]["hostnames"][0],
                    "username": found["fallback"]["username"],
                    "password": found["fallback"]["password"],
                }
            },
            {"relayhost": "[%s]:2599" % found["ses"]["hostnames"][0]},
            [("bench@example.test", "fallback@example.test", "fallback", r"smtp_pace\d+")],
        ),
    ]
    checks = []
    for case, role_vars, extra, messages in cases:
        converge_pacing(host, 14, 50, role_vars)
        if extra:
            dexec(host, "postconf -e %s && postfix reload" % postconf_assignments(extra))
        emulator("reset", container)
        cursor = host_cursor(host)
        for sender, recipient, _provider, _transport in messages:
            dexec(host, "printf 'Subject: route check\\n\\nbody\\n' | sendmail -f %s %s" % (sender, recipient))
        wait_for_records(len(messages), 90, stall=60, path=records_path)
        time.sleep(1.0)
        records = read_records(records_path)
        lines = postfix_journal(host, cursor)
        for sender, recipient, provider, transport in messages:
            record = next((r for r in records if recipient in r.get("rcpt_to", [])), None)
            line = next((text for text in lines if "to=<%s>" % recipient in text and "status=sent" in text), "")
            seen = re.search(r"postfix/(?:([\w-]+)/)?smtp\[", line)
            relay = re.search(r"relay=([^,]+)", line)
            checks.append(
                {
                    "case": case,
                    "sender": sender,
                    "recipient": recipient,
                    "expected_provider": provider,
                    "provider": record.get("provider") if record else None,
                    "tls": "%s %s" % (record.get("tls"), record.get("tls_version")) if record else None,
                    "transport": (seen.group(1) or "smtp") if seen else None,
                    "relay": relay.group(1) if relay else None,
                    "ok": bool(
                        record
                        and record.get("provider") == provider
                        and seen
                        and re.fullmatch(transport, seen.group(1) or "smtp")
                    ),
                }
            )
            log("route check %s" % checks[-1])
    data["route_checks"] = checks


def phase_pacing(results):
    data = results.setdefault("pacing", {})
    data["runs"] = []
    versions = [value for value in os.environ.get("BENCH_PACING_VERSIONS", "12,13").split(",") if value]
    data["hosts"] = {}
    for version in versions:
        host, network, container, records = PACING_HOSTS[version]
        start_pacing_emulator(network, container, records)
        start_hosts([host], cached_image(version), network=network)
        # Beside the relay phase: on the emulator's core, not on the one whose CPU that phase measures.
        last_cpu = (os.cpu_count() or 1) - 1
        if last_cpu:
            run(["docker", "update", "--cpuset-cpus", str(last_cpu), host, container])
        # A paced run needs little CPU but needs it promptly: each delivery's duration adds to its clone's
        # period. Eight times the default weight keeps the other phases' load from lengthening them.
        run(["docker", "update", "--cpu-shares", str(PACING_CPU_SHARES), host, container])
        trust_test_ca([host])
        # Every log line must reach the journal: per-clone counts and latency come from it.
        dexec(
            host,
            "mkdir -p /etc/systemd/journald.conf.d && printf '[Journal]\\nRateLimitIntervalSec=0\\n"
            "RateLimitBurst=0\\n' > /etc/systemd/journald.conf.d/bench.conf && systemctl restart systemd-journald",
        )
        playbook(write_inventory("pace%s" % version, [host]), extra_vars={"relay_max_send_rate": 0})
        dexec(host, "rm -rf %s && cp -a /etc/postfix %s" % (PACING_BASE, PACING_BASE))
        version_text = dexec(host, "postconf -h mail_version").stdout.strip()
        data["hosts"][version] = {"host": host, "postfix_version": version_text}
    data["configs"] = {}
    for rate in (14, 3.5, 0.5, 0.023):
        main_cf, master_cf = pacing.settings(pacing.design(rate), recipient_limit=50)
        data["configs"][str(rate)] = {
            "design": pacing.describe(pacing.design(rate)),
            "main_cf": main_cf,
            "master_cf": master_cf,
            "rate": pacing.rate_of(pacing.design(rate)),
        }
    lock = threading.Lock()
    threads = [threading.Thread(target=pacing_host, args=(version, results, lock)) for version in versions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    save_results(results)
    if "12" in versions:
        route_check(data)
    remove_hosts([PACING_HOSTS[version][0] for version in versions])


# ------------------------------------------------------------------ on this machine: large maps and logs
# name: (script in benchmarks/, seconds it may take: over ten times a run on 2 busy cores). The scripts'
# default sizes are the issues' (14 and 18: 10,000 and 100,000 map entries, a 100 MB log); they run on
# this machine with the real postfix tools, no container.
HOST_PHASES = {
    "maps": ("map_scale.py", 3600),
    "mail_trace": ("mail_trace_bench.py", 900),
    "queue_info": ("queue_info_bench.py", 900),
}


def script_phase(name):
    """A phase that runs its benchmarks/ script with --json and keeps the figures under its name."""
    script, timeout = HOST_PHASES[name]

    def function(results):
        figures = os.path.join(STATE, "%s.json" % name)
        # A run that fails must not leave the previous run's figures to be read as its own.
        if os.path.exists(figures):
            os.remove(figures)
        collections = os.path.join(REPO, ".build", "collections")
        env = dict(
            os.environ,
            # map_scale.py finds ansible-playbook on PATH; the others import the collection.
            PATH=VENV_BIN + os.pathsep + os.environ.get("PATH", ""),
            PYTHONPATH=os.pathsep.join(filter(None, (collections, os.environ.get("PYTHONPATH")))),
        )
        out = run([sys.executable, os.path.join(BENCH_DIR, script), "--json", figures], env=env, timeout=timeout)
        for line in out.stdout.splitlines():
            log(line)
        with open(figures, encoding="utf-8") as handle:
            results[name].update(json.load(handle))

    return function


# ------------------------------------------------------------------ environment
def environment():
    def out(cmd):
        try:
            return run(cmd, check=False).stdout.strip()
        except OSError:
            return None

    cpu = None
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), None)
    except OSError:
        pass
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "kernel": platform.release(),
        "docker": out(["docker", "version", "-f", "{{.Server.Version}}"]),
        "ansible_core": (
            out([os.path.join(VENV_BIN, "ansible"), "--version"]).splitlines()[0]
            if shutil.which(os.path.join(VENV_BIN, "ansible"))
            else None
        ),
        "commit": source_revision(),
    }


def start_beside(name):
    """The phase `name` in a process of its own, writing a results file of its own."""
    path = os.path.join(STATE, "results-%s.json" % name)
    if os.path.exists(path):
        os.remove(path)
    env = dict(
        os.environ, BENCH_PHASES=name, BENCH_RESULTS=path, BENCH_LOG_NAME="bench[%s]" % name, BENCH_EMULATOR_UP="1"
    )
    log("phase %s runs beside the others (its log lines say bench[%s])" % (name, name))
    return name, path, subprocess.Popen([sys.executable, os.path.abspath(__file__), "measure"], env=env)


# The pacing process starts once this phase is done: beside the fleet phase's 16-host converges a paced
# delivery waits for CPU and lengthens its clone's period (14/s, 5000 messages: 87 % of the rate beside
# them, 91-92 % alone, on 2 cores), while beside the relay phase's one pinned core it keeps its pace.
PACING_STARTS_AFTER = "fleet"


def join_beside(results, beside, started_after=None):
    """Wait for a phase started by start_beside and take its figures (or say why there are none)."""
    name, path, process = beside
    code = process.wait()
    figures = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            figures = json.load(handle).get(name) or {}
    if code != 0 and "error" not in figures:
        figures["error"] = "its process exited with status %d" % code
    figures["ran_beside_other_phases"] = True
    figures["started_after_phase"] = started_after
    results[name] = figures


def measure():
    """Every phase, or those named in BENCH_PHASES (kept with the other phases' earlier results).

    The pacing phase mostly waits on the provider's rate (most of an hour), so beside other phases
    it runs in a process of its own (from the end of PACING_STARTS_AFTER), its hosts and emulators on
    the emulator's core, and its figures join the others' at the end. Its own children's CPU is then
    not counted as the controller's in the fleet phase, which reads this process's.
    """
    os.makedirs(STATE, exist_ok=True)
    only = [name for name in os.environ.get("BENCH_PHASES", "").split(",") if name]
    results = load_results() if only else {}
    results.update({"counts": COUNTS, "environment": environment()})
    save_results(results)
    started = time.monotonic()
    phases = [
        ("single_host", phase_converge),
        ("fleet", phase_fleet),
        ("relay", phase_relay),
        ("profile", phase_profile),
        ("rate", phase_rate),
        ("pacing", phase_pacing),
    ] + [(name, script_phase(name)) for name in HOST_PHASES]
    phases = [(name, function) for name, function in phases if not only or name in only]
    # The role probes the smarthost before its first switch, so the emulator runs from the start; the
    # phases on this machine need none, and a run of only those starts no container.
    if any(name not in HOST_PHASES for name, _function in phases) and not os.environ.get("BENCH_EMULATOR_UP"):
        start_emulator(write_inventory("emulator", []))
    beside = None
    pacing_beside = len(phases) > 1 and any(name == "pacing" for name, _function in phases)
    phases = [(name, function) for name, function in phases if not pacing_beside or name != "pacing"]
    started_after = PACING_STARTS_AFTER if any(name == PACING_STARTS_AFTER for name, _function in phases) else None
    if pacing_beside and not started_after:
        beside = start_beside("pacing")
    for name, function in phases:
        results.pop(name, None)
        phase(results, name, function)
        if pacing_beside and name == started_after:
            beside = start_beside("pacing")
    if beside:
        join_beside(results, beside, started_after)
    if not only:
        results["total_seconds"] = round(time.monotonic() - started, 1)
    save_results(results)


if __name__ == "__main__":
    ACTION = sys.argv[1] if len(sys.argv) > 1 else "measure"
    if ACTION == "measure":
        measure()
    elif ACTION == "report":
        sys.path.insert(0, BENCH_DIR)
        import report  # noqa: E402  pylint: disable=import-outside-toplevel

        report.write(load_results(), REPORT)
    else:
        sys.exit(__doc__)
