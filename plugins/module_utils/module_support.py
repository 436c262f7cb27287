# -*- coding: utf-8 -*-
# Copyright (c) 2025, smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the smarthost.postfix collection: no compatibility promise to other collections.
"""What every module shares with Ansible: the runner, the exit path, the scrubber for secrets and
the argument specs more than one module takes."""

from __future__ import annotations

from ansible_collections.smarthost.postfix.plugins.module_utils.postfix import SERVICE_TYPES, PostfixError
from ansible_collections.smarthost.postfix.plugins.module_utils.rules import ValidationError, scrub as mask_secrets


def module_runner(module):
    """AnsibleModule.run_command without its $VAR and ~ expansion of arguments, which
    would rewrite Postfix's own $name references (e.g. `$myhostname`) before postconf sees them."""
    def run(cmd):
        return module.run_command(cmd, expand_user_and_vars=False)
    return run


def secret_scrubber(secrets):
    """A function that masks every one of secrets in a text: what each configuring module passes
    to run_and_exit, so no password survives into a message, whatever produced it."""
    secrets = [secret for secret in secrets if secret]
    return lambda text: mask_secrets(text, secrets)


def run_and_exit(module, work, path=None, scrub=None):
    """Run work() -> result dict and end a configuring module the same way everywhere.

    Bad input and Postfix's own refusals become fail_json (with the command, exit code and
    stderr for the latter); an OSError becomes "cannot write <path>" where a path is given.
    The diff is returned only in diff mode. scrub(text) cleans every message of secrets.
    """
    clean = scrub or (lambda text: text)
    try:
        result = work()
    except ValidationError as exc:
        module.fail_json(msg=clean(str(exc)))
    except PostfixError as exc:
        module.fail_json(msg=clean(str(exc)), cmd=exc.cmd, rc=exc.rc, stderr=clean(exc.stderr))
    except OSError as exc:
        if path is None:
            raise
        module.fail_json(msg=clean('cannot write %s: %s' % (path, exc)))
    diff = result.pop('diff')
    if module._diff:  # pylint: disable=protected-access
        result['diff'] = diff
    module.exit_json(**result)


def services_argument_spec():
    """The `services` option of the postconf and postfix_config modules (see doc_fragments/postconf.py)."""
    flag = dict(type='str', choices=['y', 'n', '-'])
    return dict(type='list', elements='dict', options=dict(
        name=dict(type='str', required=True),
        type=dict(type='str', default='unix', choices=list(SERVICE_TYPES)),
        state=dict(type='str', default='present', choices=['present', 'absent']),
        private=flag,
        unpriv=flag,
        chroot=flag,
        wakeup=dict(type='str'),
        maxproc=dict(type='str'),
        command=dict(type='str'),
        options=dict(type='dict'),
        exclusive_options=dict(type='bool', default=False),
    ))


