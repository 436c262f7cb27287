# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the smarthost.postfix collection: no compatibility promise to other collections.
"""What every module shares with Ansible: the runner, the exit path (where secrets are masked by
field, and only foreign text is scrubbed) and the argument specs more than one module takes."""

from __future__ import annotations

from ansible_collections.smarthost.postfix.plugins.module_utils.postfix import SERVICE_TYPES, PostfixError
from ansible_collections.smarthost.postfix.plugins.module_utils.rules import ValidationError, scrub

# Ansible's own placeholder for a no_log option in the returned invocation.
NO_LOG_PLACEHOLDER = "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"


def module_runner(module):
    """AnsibleModule.run_command without its $VAR and ~ expansion of arguments, which
    would rewrite Postfix's own $name references (e.g. `$myhostname`) before postconf sees them."""

    def run(cmd):
        return module.run_command(cmd, expand_user_and_vars=False)

    return run


def take_secrets(module):
    """The module's no_log values, taken out of Ansible's substring masking into ours.

    Ansible replaces every no_log value wherever it occurs in every string of the result: a
    password that is a common word masks that word in our messages and keys ("password
    has******** or trailing whitespace"), and with one password per map entry the cost grows
    with entries times strings (a 60,000-entry map did not finish in 15 minutes). The modules
    mask by field instead: their results are built from parts that never hold a secret (keys,
    counts, diffs through masks), the invocation is returned with every no_log option replaced
    (masked_params), and what a tool printed is scrubbed (run_and_exit). Taken right after the
    AnsibleModule is made, so nothing later runs the substring masking.
    """
    secrets = set(module.no_log_values)
    module.no_log_values.clear()
    return secrets


def masked_params(params, spec, secrets=frozenset()):
    """params with the value of every no_log option (at any depth) replaced by Ansible's placeholder,
    and so is any other value that is a secret itself (Postmark's user name is its token)."""
    masked = {}
    for name, value in params.items():
        option = spec.get(name) or {}
        if value is not None and (option.get("no_log") or (isinstance(value, str) and value in secrets)):
            masked[name] = NO_LOG_PLACEHOLDER
        elif option.get("options") and isinstance(value, dict):
            masked[name] = masked_params(value, option["options"], secrets)
        elif option.get("options") and isinstance(value, list):
            masked[name] = [
                masked_params(item, option["options"], secrets) if isinstance(item, dict) else item for item in value
            ]
        else:
            masked[name] = value
    return masked


def run_and_exit(module, work, path=None, postfix=None):
    """Run work() -> result dict and end a configuring module the same way everywhere.

    Bad input and Postfix's own refusals become fail_json (with the command, exit code and
    stderr for the latter; changed when a postconf edit had already been applied); an OSError
    becomes "cannot write <path>" where a path is given. The diff is returned only in diff
    mode. Our own words are never scrubbed; what Postfix printed (its errors and the warnings
    of postfix.warnings, passed on as module warnings) is, of every secret the module holds.
    """
    secrets = take_secrets(module)
    invocation = {"module_args": masked_params(module.params, module.argument_spec, secrets)}

    def warn_all(own=()):
        for warning in own:
            module.warn(warning)
        for warning in postfix.warnings if postfix is not None else []:
            module.warn(scrub(warning, secrets))

    try:
        result = work()
    except ValidationError as exc:
        warn_all()
        module.fail_json(msg=str(exc), changed=False, invocation=invocation)
    except PostfixError as exc:
        warn_all()
        stderr = scrub(exc.stderr, secrets)
        module.fail_json(
            msg="%s: %s" % (exc.message, stderr) if stderr else exc.message,
            cmd=exc.cmd,
            rc=exc.rc,
            stderr=stderr,
            changed=bool(exc.applied),
            invocation=invocation,
        )
    except OSError as exc:
        if path is None:
            raise
        warn_all()
        module.fail_json(msg="cannot write %s: %s" % (path, exc), invocation=invocation)
    warn_all(result.pop("_warnings", []))
    diff = result.pop("diff")
    if module._diff:  # pylint: disable=protected-access
        result["diff"] = diff
    module.exit_json(invocation=invocation, **result)


def services_argument_spec():
    """The `services` option of the postconf and postfix_config modules (see doc_fragments/postconf.py)."""
    flag = dict(type="str", choices=["y", "n", "-"])
    return dict(
        type="list",
        elements="dict",
        options=dict(
            name=dict(type="str", required=True),
            type=dict(type="str", default="unix", choices=list(SERVICE_TYPES)),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            private=flag,
            unpriv=flag,
            chroot=flag,
            wakeup=dict(type="str"),
            maxproc=dict(type="str"),
            command=dict(type="str"),
            options=dict(type="dict"),
            exclusive_options=dict(type="bool", default=False),
        ),
    )
