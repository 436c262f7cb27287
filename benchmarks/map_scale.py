# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Large SASL password maps through ansible-playbook: how long a run takes as a map grows.

Issue 18: a 60,000-entry sasl_map run did not finish in 15 minutes (Ansible's no_log masking
compared every returned string with every password). This measures, for each size, on a throwaway
Postfix configuration directory with the real postmap (nothing configured or started):

    module     the module as Ansible runs it on a target (its own process, arguments from a file):
               what the managed host spends
    playbook   a whole ansible-playbook run on localhost with the entries as a variable: the
               module plus what ansible-core spends on the controller loading, templating and
               returning a variable of that size

for each of

    create   the map from nothing: every key added, postmap builds it
    no-op    the same entries again: nothing to change (read, compare with postmap -s)
    update   one password changed: one key updated, the map rebuilt

with the sasl_map module and with postfix_config (the role's one configuring call; its
`postfix check` is off, the throwaway directory is no full instance). No containers.

    python3 benchmarks/map_scale.py [--sizes 10000,100000] [--json benchmarks/results/map_scale.json]

Prints a Markdown table; --json also writes the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
STEPS = ("create", "no-op", "update")

PLAYBOOK = """\
- name: Large SASL map
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: The map through {module}
      smarthost.postfix.{module}:
{arguments}
      register: outcome
    - name: What changed
      ansible.builtin.debug:
        msg: "changed={{{{ outcome.changed }}}}"
"""
ARGUMENTS = {
    "sasl_map": """\
        path: "{{ config_dir }}/sasl_passwd"
        config_dir: "{{ config_dir }}"
        type: hash
        exclusive: true
        entries: "{{ map_entries }}\"""",
    "postfix_config": """\
        config_dir: "{{ config_dir }}"
        check: false
        parameters:
          smtp_sasl_password_maps: "hash:{{ config_dir }}/sasl_passwd"
        sasl_maps:
          - path: "{{ config_dir }}/sasl_passwd"
            type: hash
            entries: "{{ map_entries }}\"""",
}


def entries(size, changed=None):
    """size entries in the shapes the role writes (sender keys, next-hop keys), one password each."""
    made = []
    for index in range(size):
        key = "[relay%d.example.net]:587" % index if index % 10 == 0 else "sender%d@example.org" % index
        password = "Bench-Secret-%07d/with+symbols==" % index
        if index == changed:
            password = "Rotated-" + password
        made.append({"key": key, "username": "user%d" % index, "password": password})
    return made


def ansible_playbook():
    for candidate in (os.path.join(REPO, ".venv", "bin", "ansible-playbook"), shutil.which("ansible-playbook")):
        if candidate and os.path.exists(candidate):
            return candidate
    sys.exit("ansible-playbook not found: run make setup")


def module_arguments(module, config_dir, map_entries):
    if module == "sasl_map":
        return {
            "path": config_dir + "/sasl_passwd",
            "config_dir": config_dir,
            "type": "hash",
            "exclusive": True,
            "entries": map_entries,
        }
    return {
        "config_dir": config_dir,
        "check": False,
        "parameters": {"smtp_sasl_password_maps": "hash:%s/sasl_passwd" % config_dir},
        "sasl_maps": [{"path": config_dir + "/sasl_passwd", "type": "hash", "entries": map_entries}],
    }


def run_module_step(workdir, module, size, step, env):
    """The module in its own process, as on a target: python MODULE ARGS_FILE."""
    config_dir = os.path.join(workdir, module, "direct")
    arguments = os.path.join(workdir, module, "args-%s.json" % step)
    with open(arguments, "w", encoding="utf-8") as handle:
        json.dump(
            {
                "ANSIBLE_MODULE_ARGS": module_arguments(
                    module, config_dir, entries(size, changed=size // 2 if step == "update" else None)
                )
            },
            handle,
        )
    source = os.path.join(REPO, "plugins", "modules", module + ".py")
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, source, arguments],
        env=dict(env, PYTHONPATH=env["ANSIBLE_COLLECTIONS_PATH"]),
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.monotonic() - start
    result = json.loads(proc.stdout)
    if result.get("failed"):
        sys.exit("%s %s %d failed: %s" % (module, step, size, result.get("msg")))
    return seconds, bool(result["changed"]), "Bench-Secret-" in proc.stdout


def run_step(workdir, module, size, step, env):
    config_dir = os.path.join(workdir, module, "postfix")
    variables = os.path.join(workdir, module, "vars-%s.json" % step)
    with open(variables, "w", encoding="utf-8") as handle:
        json.dump(
            {"config_dir": config_dir, "map_entries": entries(size, changed=size // 2 if step == "update" else None)},
            handle,
        )
    playbook = os.path.join(workdir, module, "playbook.yml")
    start = time.monotonic()
    proc = subprocess.run(
        [ansible_playbook(), "-i", "localhost,", playbook, "-e", "@" + variables],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit("%s %s %d failed:\n%s" % (module, step, size, proc.stdout[-3000:]))
    module_seconds, module_changed, module_leaked = run_module_step(workdir, module, size, step, env)
    changed = "changed=True" in proc.stdout
    leaked = "Bench-Secret-" in proc.stdout or module_leaked
    return {
        "module": module,
        "size": size,
        "step": step,
        "seconds": round(seconds, 1),
        "module_seconds": round(module_seconds, 1),
        "changed": changed and module_changed,
        "unchanged": not changed and not module_changed,
        "password_in_output": leaked,
    }


def measure(sizes, workdir):
    env = dict(
        os.environ,
        ANSIBLE_COLLECTIONS_PATH=os.path.join(REPO, ".build", "collections"),
        ANSIBLE_HOME=os.path.join(workdir, "ansible-home"),
        ANSIBLE_LOCAL_TEMP=os.path.join(workdir, "tmp"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_RETRY_FILES_ENABLED="0",
        ANSIBLE_PYTHON_INTERPRETER=sys.executable,
        ANSIBLE_CONFIG=os.path.join(workdir, "ansible.cfg"),
    )
    with open(env["ANSIBLE_CONFIG"], "w", encoding="utf-8") as handle:
        handle.write("")
    rows = []
    for size in sizes:
        for module in ARGUMENTS:
            base = os.path.join(workdir, module)
            shutil.rmtree(base, ignore_errors=True)
            for config in ("postfix", "direct"):
                os.makedirs(os.path.join(base, config))
                for name in ("main.cf", "master.cf"):
                    open(os.path.join(base, config, name), "w").close()
                os.utime(os.path.join(base, config, "main.cf"), (0, 0))  # postconf waits for a young main.cf
            with open(os.path.join(base, "playbook.yml"), "w", encoding="utf-8") as handle:
                handle.write(PLAYBOOK.format(module=module, arguments=ARGUMENTS[module]))
            for step in STEPS:
                row = run_step(workdir, module, size, step, env)
                rows.append(row)
                print(
                    "%-14s %7d %-7s module %6.1fs playbook %6.1fs changed=%s"
                    % (module, size, step, row["module_seconds"], row["seconds"], row["changed"]),
                    file=sys.stderr,
                )
    return rows


def markdown(rows):
    lines = [
        "| module | entries | create: module / playbook (s) | no-op (s) | one password changed (s) "
        "| password in output |",
        "|---|---:|---:|---:|---:|---|",
    ]
    seen = []
    for row in rows:
        if (row["module"], row["size"]) not in seen:
            seen.append((row["module"], row["size"]))
    for module, size in seen:
        steps = {row["step"]: row for row in rows if row["module"] == module and row["size"] == size}
        lines.append(
            "| %s | %s | %s | %s | %s | %s |"
            % (
                module,
                f"{size:,}",
                *["%.1f / %.1f" % (steps[step]["module_seconds"], steps[step]["seconds"]) for step in STEPS],
                "yes" if any(row["password_in_output"] for row in steps.values()) else "no",
            )
        )
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    workdir = tempfile.mkdtemp(prefix="smarthost-map-scale-")
    try:
        rows = measure(sizes, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    for row in rows:
        as_expected = row["unchanged"] if row["step"] == "no-op" else row["changed"]
        if not as_expected or row["password_in_output"]:
            sys.exit("unexpected outcome: %s" % row)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"measured": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "rows": rows}, handle, indent=1)
    sys.stdout.write(markdown(rows))


if __name__ == "__main__":
    main()
