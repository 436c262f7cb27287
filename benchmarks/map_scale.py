#!/usr/bin/env python3
# -*- coding: utf-8 -*-
# Copyright (c) 2025, smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Large SASL password maps through ansible-playbook: how long a run takes as a map grows.

Issue 18: a 60,000-entry sasl_map run did not finish in 15 minutes (Ansible's no_log masking
compared every returned string with every password). This measures, for each size, a full
ansible-playbook run on localhost (controller and module, a throwaway Postfix configuration
directory with the real postmap, nothing configured or started):

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

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..'))
STEPS = ('create', 'no-op', 'update')

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
    'sasl_map': """\
        path: "{{ config_dir }}/sasl_passwd"
        config_dir: "{{ config_dir }}"
        type: hash
        exclusive: true
        entries: "{{ map_entries }}\"""",
    'postfix_config': """\
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
        key = '[relay%d.example.net]:587' % index if index % 10 == 0 else 'sender%d@example.org' % index
        password = 'Bench-Secret-%07d/with+symbols==' % index
        if index == changed:
            password = 'Rotated-' + password
        made.append({'key': key, 'username': 'user%d' % index, 'password': password})
    return made


def ansible_playbook():
    for candidate in (os.path.join(REPO, '.venv', 'bin', 'ansible-playbook'), shutil.which('ansible-playbook')):
        if candidate and os.path.exists(candidate):
            return candidate
    sys.exit('ansible-playbook not found: run make setup')


def run_step(workdir, module, size, step, env):
    config_dir = os.path.join(workdir, module, 'postfix')
    variables = os.path.join(workdir, module, 'vars-%s.json' % step)
    with open(variables, 'w', encoding='utf-8') as handle:
        json.dump({'config_dir': config_dir, 'map_entries': entries(size, changed=size // 2 if step == 'update' else None)},
                  handle)
    playbook = os.path.join(workdir, module, 'playbook.yml')
    start = time.monotonic()
    proc = subprocess.run([ansible_playbook(), '-i', 'localhost,', playbook, '-e', '@' + variables], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, check=False)
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit('%s %s %d failed:\n%s' % (module, step, size, proc.stdout[-3000:]))
    changed = 'changed=True' in proc.stdout
    leaked = 'Bench-Secret-' in proc.stdout
    return {'module': module, 'size': size, 'step': step, 'seconds': round(seconds, 1), 'changed': changed,
            'password_in_output': leaked}


def measure(sizes, workdir):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(REPO, '.build', 'collections'),
               ANSIBLE_HOME=os.path.join(workdir, 'ansible-home'), ANSIBLE_LOCAL_TEMP=os.path.join(workdir, 'tmp'),
               ANSIBLE_NOCOLOR='1', ANSIBLE_FORCE_COLOR='0', ANSIBLE_RETRY_FILES_ENABLED='0',
               ANSIBLE_PYTHON_INTERPRETER=sys.executable, ANSIBLE_CONFIG=os.path.join(workdir, 'ansible.cfg'))
    with open(env['ANSIBLE_CONFIG'], 'w', encoding='utf-8') as handle:
        handle.write('')
    rows = []
    for size in sizes:
        for module in ARGUMENTS:
            base = os.path.join(workdir, module)
            shutil.rmtree(base, ignore_errors=True)
            os.makedirs(os.path.join(base, 'postfix'))
            for name in ('main.cf', 'master.cf'):
                open(os.path.join(base, 'postfix', name), 'w').close()
            os.utime(os.path.join(base, 'postfix', 'main.cf'), (0, 0))  # postconf waits for a young main.cf
            with open(os.path.join(base, 'playbook.yml'), 'w', encoding='utf-8') as handle:
                handle.write(PLAYBOOK.format(module=module, arguments=ARGUMENTS[module]))
            for step in STEPS:
                row = run_step(workdir, module, size, step, env)
                rows.append(row)
                print('%-14s %7d %-7s %6.1fs changed=%s' % (module, size, step, row['seconds'], row['changed']),
                      file=sys.stderr)
    return rows


def markdown(rows):
    lines = ['| module | entries | create (s) | no-op (s) | one password changed (s) | password in output |',
             '|---|---:|---:|---:|---:|---|']
    seen = []
    for row in rows:
        if (row['module'], row['size']) not in seen:
            seen.append((row['module'], row['size']))
    for module, size in seen:
        steps = {row['step']: row for row in rows if row['module'] == module and row['size'] == size}
        lines.append('| %s | %s | %.1f | %.1f | %.1f | %s |' % (
            module, '{:,}'.format(size), steps['create']['seconds'], steps['no-op']['seconds'],
            steps['update']['seconds'], 'yes' if any(row['password_in_output'] for row in steps.values()) else 'no'))
    return '\n'.join(lines) + '\n'


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--sizes', default='10000,100000')
    parser.add_argument('--json', help='also write the figures here')
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(',')]
    workdir = tempfile.mkdtemp(prefix='smarthost-map-scale-')
    try:
        rows = measure(sizes, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    for row in rows:
        expected = row['step'] != 'no-op'
        if row['changed'] != expected or row['password_in_output']:
            sys.exit('unexpected outcome: %s' % row)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, 'w', encoding='utf-8') as handle:
            json.dump({'measured': time.strftime('%Y-%m-%dT%H:%M:%S%z'), 'rows': rows}, handle, indent=1)
    sys.stdout.write(markdown(rows))


if __name__ == '__main__':
    main()
