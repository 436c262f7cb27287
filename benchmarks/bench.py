# -*- coding: utf-8 -*-
# Copyright: smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmarks of smarthost.postfix (issue 7), driven by benchmarks/run.sh.

    bench.py measure   run every phase on containers, write benchmarks/results/results.json
    bench.py report    write docs/performance.md from results.json

Each phase stores its runs as it finishes them, so a phase that fails leaves
the others' figures and its own error in the report. Counts come from the
BENCH_* environment variables (see COUNTS).
"""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
import traceback

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH_DIR = os.path.join(REPO, "benchmarks")
STATE = os.path.join(BENCH_DIR, "results")
RESULTS = os.path.join(STATE, "results.json")
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
    "rate_runs": int(os.environ.get("BENCH_RATE_RUNS", "1")),
    "rate_messages": int(os.environ.get("BENCH_RATE_MESSAGES", "1000")),
    "profile_messages": int(os.environ.get("BENCH_PROFILE_MESSAGES", "5000")),
    "smtp_source_sessions": 10,
    "message_bytes": 2000,
    "forks": 16,
}
SES_RATE = 14.0

# Role settings per configuration (the SES preset as shipped against the emulator, plus these).
ROLE_CONFIGS = {
    # Unthrottled: the sandbox's 1 msg/s pacing off, everything else as shipped (TLS connection reuse on).
    "preset": {"relay_max_send_rate": 0},
    # An account with SES's default production rate, as an operator would set it.
    "paced": {"relay_max_send_rate": SES_RATE},
    # No pacing at all, one connection at a time: the least an unpaced relay can send.
    "unpaced": {"relay_max_send_rate": 0, "relay_destination_concurrency_limit": 1},
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
    print("bench: %s" % message, flush=True)


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


def ansible_env(count_file=None, pipelining=True):
    """The same settings for every timed run, the floor included: docker exec with pipelining."""
    env = dict(os.environ)
    env.update({
        "ANSIBLE_PIPELINING": "1" if pipelining else "0",
        "PATH": VENV_BIN + os.pathsep + env.get("PATH", ""),
        "ANSIBLE_COLLECTIONS_PATH": os.path.join(REPO, ".build", "collections"),
        "ANSIBLE_CALLBACK_PLUGINS": os.path.join(BENCH_DIR, "callback_plugins"),
        "ANSIBLE_CALLBACKS_ENABLED": "bench_count",
        "ANSIBLE_FORKS": str(COUNTS["forks"]),
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "ANSIBLE_DEPRECATION_WARNINGS": "0",
    })
    env.pop("BENCH_COUNT_FILE", None)
    if count_file:
        env["BENCH_COUNT_FILE"] = count_file
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
    inventory = {"all": {
        "vars": {"ansible_connection": "community.docker.docker", "ansible_python_interpreter": "/usr/bin/python3"},
        "children": {GROUP: {"hosts": {host: None for host in hosts}, "vars": group_vars}},
    }}
    path = os.path.join(STATE, "inventory-%s.yml" % name)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(inventory, handle, indent=1)
    return path


def playbook(inventory, extra_vars=None, check=False, count_file=None, pipelining=True):
    """Seconds one run of the shipped playbooks/ses.yml takes (wall clock, process start to exit)."""
    cmd = [os.path.join(VENV_BIN, "ansible-playbook"), "-i", inventory, PLAYBOOK]
    if extra_vars:
        cmd += ["-e", json.dumps(extra_vars)]
    if check:
        cmd.append("--check")
    start = time.monotonic()
    run(cmd, env=ansible_env(count_file, pipelining))
    return time.monotonic() - start


def adhoc(inventory, module, pipelining=True):
    cmd = [os.path.join(VENV_BIN, "ansible"), "-i", inventory, GROUP, "-m", module]
    start = time.monotonic()
    run(cmd, env=ansible_env(pipelining=pipelining))
    return time.monotonic() - start


def start_hosts(names, image):
    for name in names:
        run(["docker", "rm", "-f", "-v", name], check=False)
        run(["docker", "run", "-d", "--name", name, "--hostname", name + ".example.test", "--network", NETWORK,
             "--cgroupns", "host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "--tmpfs", "/run", "--tmpfs", "/run/lock",
             "--label", LABEL, image])
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


def controller_cpu_seconds():
    """User and system CPU of every finished child of this process (ansible-playbook and its workers)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def source_revision():
    """The commit measured, marked +uncommitted where tracked files differ from it (docs/ aside: the
    pages generated from results change nothing that is measured)."""
    commit = run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], check=False).stdout.strip()
    dirty = run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no", "--", ".", ":!docs"],
                check=False).stdout.strip()
    return (commit + ("+uncommitted" if dirty else "")) if commit else None


def phase(results, name, function):
    log("phase %s" % name)
    start = time.monotonic()
    # Other work on the machine shows here: the ratios within a run are what count.
    results.setdefault(name, {})["load_average_at_start"] = [round(value, 2) for value in os.getloadavg()]
    results[name]["commit"] = source_revision()
    try:
        function(results)
    except Exception as error:  # pylint: disable=broad-exception-caught  # a broken phase must not cost the others their figures
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
        entry = {"run": index + 1}
        entry["ping"] = round(adhoc(inventory, "ping"), 2)
        entry["setup"] = round(adhoc(inventory, "setup"), 2)
        entry["noop"] = round(playbook(inventory, count_file=count_noop), 2)
        entry["check"] = round(playbook(inventory, check=True, count_file=count_check), 2)
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
        data["counts_noop"] = noop_counts
        data["counts_check"] = check_counts
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
                hosts_before = sum(cpu_seconds(host) or 0.0 for host in hosts)
                controller_before = controller_cpu_seconds()
                fresh = playbook(inventory, extra_vars=one_batch)
                # CPU the fresh converge cost: the controller's processes and every target container.
                cpu = {"controller": round(controller_cpu_seconds() - controller_before, 1),
                       "hosts": round(sum(cpu_seconds(host) or 0.0 for host in hosts) - hosts_before, 1)}
                noop = playbook(inventory, extra_vars=one_batch)
            finally:
                remove_hosts(hosts)
            data["runs"].append({"run": index + 1, "hosts": size, "fresh": round(fresh, 2), "noop": round(noop, 2),
                                 "fresh_cpu_seconds": cpu})
            log("fleet run %d, %d hosts: fresh %.1fs, no-op %.1fs" % (index + 1, size, fresh, noop))
            save_results(results)


# ------------------------------------------------------------------ 5-6: relay
RELAY_HOST = "bench-relay"
CONFIGS = "/root/bench-configs"


def prepare_relay_host(data):
    """bench-relay converged by the role in each configuration, snapshots of /etc/postfix per configuration."""
    start_hosts([RELAY_HOST], CACHED_IMAGE)
    inventory = write_inventory("relay", [RELAY_HOST])
    start_emulator(inventory)
    # Every Postfix log line must reach the journal: latency comes from its delay= fields.
    dexec(RELAY_HOST, "mkdir -p /etc/systemd/journald.conf.d && "
          "printf '[Journal]\\nRateLimitIntervalSec=0\\nRateLimitBurst=0\\n' > /etc/systemd/journald.conf.d/bench.conf && "
          "systemctl restart systemd-journald")
    data["cpusets"] = pin_cpus()
    for name, role_vars in ROLE_CONFIGS.items():
        playbook(inventory, extra_vars=role_vars)
        dexec(RELAY_HOST, "mkdir -p %s && rm -rf %s/%s && cp -a /etc/postfix %s/%s" % (CONFIGS, CONFIGS, name, CONFIGS, name))
        data.setdefault("postconf_n", {})[name] = dexec(RELAY_HOST, "postconf -n").stdout.splitlines()
    # The plain guide configuration: Debian's template, the package's master.cf, five settings.
    settings = " ".join("'%s'" % line for line in PLAIN_GUIDE)
    dexec(RELAY_HOST, "set -e; d=%s; rm -rf $d/plain $d/intake; cp -a $d/preset $d/plain; "
          "cp /usr/share/postfix/main.cf.debian $d/plain/main.cf; cp /usr/share/postfix/master.cf.dist $d/plain/master.cf; "
          "postconf -c $d/plain -e %s; postalias /etc/aliases; "
          # Local intake: the throughput configuration with every message discarded after the queue.
          "cp -a $d/preset $d/intake; postconf -c $d/intake -e default_transport=discard:intake" % (CONFIGS, settings))
    for name in ("plain", "intake"):
        data.setdefault("postconf_n", {})[name] = dexec(
            RELAY_HOST, "postconf -c %s/%s -n | grep -v '^config_directory'" % (CONFIGS, name)).stdout.splitlines()


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
    """The harness's prepare.yml: the emulator on smarthost-bench under the providers' names, the test CA on the hosts."""
    run([os.path.join(VENV_BIN, "ansible-playbook"), "-i", inventory,
         os.path.join(REPO, "molecule", "resources", "playbooks", "prepare.yml"),
         "-e", "emulator_project_dir=%s" % REPO, "-e", "emulator_state_dir=%s" % EMULATOR_STATE,
         "-e", "emulator_scenario=bench"], env=ansible_env())


def switch_config(name):
    dexec(RELAY_HOST, "systemctl stop postfix@- postfix; rm -rf /etc/postfix; cp -a %s/%s /etc/postfix; "
          "postsuper -d ALL >/dev/null 2>&1; systemctl reset-failed postfix@- postfix 2>/dev/null; systemctl start postfix; "
          "for i in $(seq 100); do ss -ltn | grep -q ':25 ' && exit 0; sleep 0.1; done; exit 1" % (CONFIGS, name))


def emulator(command):
    return run(["docker", "exec", EMULATOR, "sh", "-c", "emulatorctl " + command]).stdout


def read_records():
    try:
        with open(RECORDS, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.endswith("\n") and line.strip()]
    except FileNotFoundError:
        return []


def wait_for_records(count, timeout, stall=30.0):
    """The emulator's records once `count` arrived, the timeout passed, or nothing new came for `stall` seconds."""
    deadline = time.monotonic() + timeout
    seen, last_change = -1, time.monotonic()
    while True:
        records = read_records()
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
    cpu_before = {name: cpu_seconds(name) for name in (RELAY_HOST, EMULATOR)}
    start = time.time()
    dexec(RELAY_HOST, "smtp-source -s %d -m %d -l %d -f bench@example.test -t rcpt@example.test 127.0.0.1:25"
          % (COUNTS["smtp_source_sessions"], messages, COUNTS["message_bytes"]))
    submitted = time.time()
    entry = {"config": config, "messages": messages, "submit_seconds": round(submitted - start, 3),
             "submit_rate": round(messages / (submitted - start), 1)}
    if config == "intake":
        # Wait until the discard agent has taken everything out of the queue.
        dexec(RELAY_HOST, "for i in $(seq 600); do [ -z \"$(postqueue -j)\" ] && exit 0; sleep 0.1; done; exit 1", check=False)
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
            entry["cpu_%s" % ("emulator" if name == EMULATOR else "target")] = round((after - before) / wall, 2)
    entry["seconds"] = round(end - start, 3)
    if entry.get("cpu_target") is not None and entry["delivered"]:
        # What one message costs the target, whatever limited the rate.
        entry["target_ms_per_message"] = round(entry["cpu_target"] * wall * 1000.0 / entry["delivered"], 2)
    delays = delivery_delays(cursor, identifier)
    entry["latency_samples"] = len(delays)
    entry["latency_p50"] = percentile(delays, 0.50)
    entry["latency_p99"] = percentile(delays, 0.99)
    return entry


def phase_relay(results):
    data = results.setdefault("relay", {})
    data.setdefault("runs", [])
    if os.environ.get("BENCH_REUSE_RELAY") == "1" and dexec(RELAY_HOST, "test -d %s/intake" % CONFIGS, check=False).returncode == 0:
        data["postconf_n"] = load_results().get("relay", {}).get("postconf_n", {})
    else:
        prepare_relay_host(data)
    for index in range(COUNTS["relay_runs"]):
        for messages in COUNTS["relay_messages"]:
            for config in ("intake", "plain", "preset"):
                entry = relay_run(config, messages, wait_timeout=60 + messages / 20.0)
                entry["run"] = index + 1
                data["runs"].append(entry)
                log("relay run %d %s %d: %.0f msg/s p50 %s p99 %s" % (
                    index + 1, config, messages, entry["rate"], entry["latency_p50"], entry["latency_p99"]))
                save_results(results)


PROC_TICKS = r"""for p in /proc/[0-9]*; do s=$(cat $p/stat 2>/dev/null) && echo "${p#/proc/} $s"; done"""


def process_ticks():
    """{pid: (command, user+system clock ticks)} of every process on the relay host."""
    ticks = {}
    for line in dexec(RELAY_HOST, PROC_TICKS).stdout.splitlines():
        pid, rest = line.split(" ", 1)
        fields = rest[rest.rindex(")") + 2:].split()
        ticks[pid] = (rest[rest.index("(") + 1:rest.rindex(")")], int(fields[11]) + int(fields[12]))
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
    return {"config": config, "messages": messages, "rate": entry["rate"],
            "ms_per_message": dict(sorted(per_message.items(), key=lambda item: -item[1]))}


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
                log("rate run %d %s: %d delivered, %.2f msg/s, %d x 454" % (
                    index + 1, config, entry["delivered"], entry["rate"], entry["replies_454"]))
                save_results(results)
    finally:
        emulator("mode normal")


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
        "ansible_core": out([os.path.join(VENV_BIN, "ansible"), "--version"]).splitlines()[0] if shutil.which(os.path.join(VENV_BIN, "ansible")) else None,
        "commit": source_revision(),
    }


def measure():
    """Every phase, or those named in BENCH_PHASES (kept with the other phases' earlier results)."""
    os.makedirs(STATE, exist_ok=True)
    only = [name for name in os.environ.get("BENCH_PHASES", "").split(",") if name]
    results = load_results() if only else {}
    results.update({"counts": COUNTS, "environment": environment()})
    save_results(results)
    started = time.monotonic()
    # The role probes the smarthost before its first switch, so the emulator runs from the start.
    start_emulator(write_inventory("emulator", []))
    for name, function in (("single_host", phase_converge), ("fleet", phase_fleet), ("relay", phase_relay),
                           ("profile", phase_profile), ("rate", phase_rate)):
        if not only or name in only:
            results.pop(name, None)
            phase(results, name, function)
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
