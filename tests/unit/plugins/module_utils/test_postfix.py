# -*- coding: utf-8 -*-
# Copyright (c) 2025, smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Postfix CLI layer, against the real postconf/postfix on throwaway config dirs."""

from __future__ import annotations

import subprocess

import pytest

from ansible_collections.smarthost.postfix.plugins.module_utils.postfix import (
    MasterEntry,
    Postfix,
    PostfixError,
    ValidationError,
    configure,
    describe,
    find_unknown_parameters,
    format_parameter_value,
    normalize_service,
    parse_settings,
    parse_version,
    plan_parameters,
    plan_services,
    read_main_cf,
    referenced_names,
    split_command,
    tls_min_version_syntax,
)


def postconf(config_dir, *args):
    """Ask the real postconf directly, independent of the code under test."""
    return subprocess.run(['postconf', '-c', str(config_dir)] + list(args), check=True,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, universal_newlines=True).stdout


# --------------------------------------------------------------------------- pure parsing

def test_parse_settings_handles_empty_values():
    assert parse_settings('a = 1\nmydestination =\nb = x = y\n') == {'a': '1', 'mydestination': '', 'b': 'x = y'}


def test_read_main_cf_follows_postfix_line_rules(tmp_path):
    main_cf = tmp_path / 'main.cf'
    main_cf.write_text('# comment = no\nfirst = a\n  b\n\n   \n\tc\nsecond=2\n#third = 3\nfirst = again\n    x\n')
    assert read_main_cf(str(main_cf)) == {'first': 'again x', 'second': '2'}


@pytest.mark.parametrize('value, expected', [
    (True, 'yes'),
    (False, 'no'),
    (10240000, '10240000'),
    (['a', 'b', 'c'], 'a, b, c'),
    ([], ''),
    ('  permit_mynetworks,\n   reject  ', 'permit_mynetworks, reject'),
    (None, None),
])
def test_format_parameter_value(value, expected):
    assert format_parameter_value(value) == expected


def test_referenced_names_covers_all_expansion_forms():
    value = '$myhostname ${mydomain} $(relay_x) ${maybe?yes} ${other:no} $$ plain'
    assert referenced_names(value) == {'myhostname', 'mydomain', 'relay_x', 'maybe', 'other'}


@pytest.mark.parametrize('version, parsed, syntax', [
    ('3.7.11', (3, 7, 11), 'modern'),
    ('3.6.0', (3, 6, 0), 'modern'),
    ('3.5.25', (3, 5, 25), 'legacy'),
    ('3.10-20240101', (3, 10), 'modern'),
    ('2.10.1', (2, 10, 1), 'legacy'),
])
def test_versions_and_tls_syntax(version, parsed, syntax):
    assert parse_version(version) == parsed
    assert tls_min_version_syntax(version) == syntax


@pytest.mark.parametrize('command, expected', [
    ('smtp', ('smtp', {})),
    ('smtp -o syslog_name=postfix/$service_name', ('smtp', {'syslog_name': 'postfix/$service_name'})),
    ('smtp -v -o b=2 -oa=1', ('smtp -v', {'b': '2', 'a': '1'})),
    ('smtp -o {smtp_helo_name = foo bar} -o x=', ('smtp', {'smtp_helo_name': 'foo bar', 'x': ''})),
    # -o after the first non-option argument belongs to the pipe command, not to Postfix
    ('pipe -o a=b flags=R argv=/bin/x -o keep ${nexthop}', ('pipe flags=R argv=/bin/x -o keep ${nexthop}', {'a': 'b'})),
])
def test_split_command(command, expected):
    assert split_command(command) == expected


# --------------------------------------------------------------------------- postconf facts

def test_facts_come_from_postconf(postfix_dir):
    postfix = Postfix(str(postfix_dir))
    assert postfix.mail_version() == postconf(postfix_dir, '-dh', 'mail_version').strip()
    assert postfix.default_database_type() == postconf(postfix_dir, '-h', 'default_database_type').strip()
    assert postfix.map_types() == postconf(postfix_dir, '-m').split()
    assert 'hash' in postfix.map_types()
    names = postfix.parameter_names()
    assert 'relayhost' in names
    assert 'relay_destination_rate_delay' in names  # derived from master.cf's relay service
    facts = describe(postfix)
    assert facts['installed'] is True
    assert facts['config_directory'] == str(postfix_dir)


def test_map_types_without_main_cf(postfix_dir):
    (postfix_dir / 'main.cf').unlink()
    postfix = Postfix(str(postfix_dir))
    assert 'hash' in postfix.map_types()
    assert postfix.default_database_type() == postconf(postfix_dir, '-dh', 'default_database_type').strip()
    assert not (postfix_dir / 'main.cf').exists()


def test_explicit_settings_include_names_postconf_n_hides(postfix_dir, settle):
    with open(postfix_dir / 'main.cf', 'a') as handle:
        handle.write('lonely_custom = nobody uses me\nrelayhost = [a.example]:587\n')
    settle()
    assert 'lonely_custom' not in postconf(postfix_dir, '-n')
    settings = Postfix(str(postfix_dir)).explicit_settings()
    assert settings['lonely_custom'] == 'nobody uses me'
    assert settings['relayhost'] == '[a.example]:587'


def test_master_entries_split_columns_command_and_overrides(postfix_dir):
    entries = Postfix(str(postfix_dir)).master_entries()
    relay = entries['relay/unix']
    assert (relay.private, relay.unpriv, relay.chroot, relay.wakeup, relay.maxproc) == ('-', '-', 'y', '-', '-')
    assert relay.command == 'smtp'
    assert relay.options == {'syslog_name': 'postfix/$service_name'}
    assert entries['pickup/unix'].wakeup == '60'
    assert entries['smtp/inet'].command == 'smtpd'
    assert entries['maildrop/unix'].command.startswith('pipe flags=DRXhu user=vmail argv=/usr/bin/maildrop')


def test_master_entry_line_round_trips_through_postconf(postfix_dir):
    postfix = Postfix(str(postfix_dir))
    entry = MasterEntry('ses_relay', 'unix', chroot='n', maxproc='5', command='pipe flags=R argv=/bin/cat ${nexthop}',
                        options={'relayhost': '[email-smtp.eu-west-1.amazonaws.com]:587', 'smtp_helo_name': 'a b'})
    postfix.postconf('-M', '%s=%s' % (entry.key, entry.line()))
    assert postfix.master_entries()['ses_relay/unix'] == entry


def test_errors_carry_command_and_postfix_message(postfix_dir):
    postfix = Postfix(str(postfix_dir))
    with pytest.raises(PostfixError) as caught:
        postfix.postconf('-e', 'multi=line\nvalue')
    assert caught.value.rc != 0
    assert caught.value.cmd[1:3] == ['-c', str(postfix_dir)]
    assert 'multi-line' in caught.value.stderr
    assert 'multi-line' in str(caught.value)


def test_check_passes_and_reports_what_postfix_says(postfix_dir, settle):
    postfix = Postfix(str(postfix_dir))
    postfix.check()
    with open(postfix_dir / 'main.cf', 'a') as handle:
        handle.write('setgid_group =\n')
    settle()
    with pytest.raises(PostfixError) as caught:
        postfix.check()
    assert 'setgid_group' in caught.value.stderr
    assert caught.value.cmd[-1] == 'check'


def test_missing_tool_is_a_clear_error(monkeypatch):
    monkeypatch.setattr('ansible_collections.smarthost.postfix.plugins.module_utils.postfix.find_binary', lambda name: None)
    with pytest.raises(PostfixError, match='postconf not found'):
        Postfix('/nonexistent').postconf('-n')


# --------------------------------------------------------------------------- planning

def test_plan_parameters():
    current = {'relayhost': '[a]:587', 'inet_interfaces': 'all', 'x_y': '1'}
    desired = {'relayhost': '[a]:587', 'inet_interfaces': 'loopback-only', 'mydestination': '', 'x_y': None}
    assert plan_parameters(current, desired, 'present') == (
        {'inet_interfaces': 'loopback-only', 'mydestination': ''}, ['x_y'])
    assert plan_parameters(current, desired, 'absent') == ({}, ['relayhost', 'inet_interfaces', 'x_y'])


def test_plan_services_uses_cheapest_edits():
    current = {
        'relay/unix': MasterEntry('relay', 'unix', chroot='y', command='smtp',
                                  options={'syslog_name': 'x', 'smtp_fallback_relay': ''}),
        'tlsproxy/unix': MasterEntry('tlsproxy', 'unix', chroot='y', maxproc='0', command='tlsproxy'),
    }
    specs = [normalize_service(spec) for spec in [
        {'name': 'relay', 'chroot': 'n', 'options': {'smtp_fallback_relay': None, 'smtp_helo_timeout': 5}},
        {'name': 'tlsproxy', 'chroot': 'y', 'maxproc': 0, 'command': 'tlsproxy'},
        {'name': 'ses_relay', 'command': 'smtp', 'options': {'relayhost': '[s]:587'}},
    ]]
    plan = plan_services(current, specs)
    assert plan.changed_services == ['relay/unix', 'ses_relay/unix']
    assert plan.fields == {'relay/unix/chroot': 'n'}
    assert plan.remove_options == ['relay/unix/smtp_fallback_relay']
    assert plan.set_options == {'relay/unix/smtp_helo_timeout': '5'}
    assert [entry.line() for entry in plan.replace] == ['ses_relay unix - - - - - smtp -o relayhost=[s]:587']


def test_plan_services_rewrites_entry_when_command_changes():
    current = {'relay/unix': MasterEntry('relay', 'unix', command='smtp', options={'syslog_name': 'x'})}
    plan = plan_services(current, [normalize_service({'name': 'relay', 'command': 'lmtp'})])
    assert [entry.line() for entry in plan.replace] == ['relay unix - - - - - lmtp -o syslog_name=x']
    assert not plan.fields and not plan.set_options


@pytest.mark.parametrize('spec, message', [
    ({'name': 'bad name'}, 'invalid master.cf service name'),
    ({'name': 'x', 'type': 'tcp'}, 'type must be one of'),
    ({'name': 'x', 'maxproc': 'many'}, 'invalid maxproc'),
    ({'name': 'x', 'wakeup': '60!'}, 'invalid wakeup'),
    ({'name': 'x', 'command': 'smtp -o a=b'}, 'put -o overrides into options'),
    ({'name': 'x', 'options': {'smtp_helo_name': 'a b'}}, 'must not contain whitespace'),
    ({'name': 'x', 'options': {'bad-name': 'a'}}, 'invalid option name'),
])
def test_normalize_service_rejects(spec, message):
    with pytest.raises(ValidationError, match=message):
        normalize_service(spec)


def test_unknown_parameters_knows_what_postconf_knows(postfix_dir):
    postfix = Postfix(str(postfix_dir))
    current = postfix.explicit_settings()
    assert find_unknown_parameters(postfix, ['relayhost', 'relay_destination_rate_delay'], current) == []
    assert find_unknown_parameters(postfix, ['relayhots'], current) == ['relayhots']
    # a user-defined name is known once a value refers to it
    assert find_unknown_parameters(postfix, ['my_limit'], dict(current, relay_domains='${my_limit}')) == []
    # names derived from a service defined in the same call
    ses = MasterEntry('ses_relay', 'unix', command='smtp')
    assert find_unknown_parameters(postfix, ['ses_relay_destination_rate_delay'], current, (), [ses]) == []
    assert find_unknown_parameters(postfix, ['ses_relay_destination_rate_delay'], current) == [
        'ses_relay_destination_rate_delay']
    # restriction classes and $names used by -o overrides
    assert find_unknown_parameters(postfix, ['my_class'], dict(current, smtpd_restriction_classes='my_class')) == []
    assert find_unknown_parameters(postfix, ['mua_rules'], current, ['$mua_rules']) == []


def test_configure_writes_main_cf_in_one_postconf_e(postfix_dir, tool_log, settle):
    postfix = Postfix(str(postfix_dir))
    result = configure(postfix, {'relayhost': '[a.example]:587', 'smtp_tls_security_level': 'secure',
                                 'smtp_sasl_auth_enable': True, 'sample_directory': None})
    assert result['changed_parameters'] == ['relayhost', 'smtp_tls_security_level', 'smtp_sasl_auth_enable']
    edits = [call for call in tool_log.calls('postconf') if '-e' in call]
    assert len(edits) == 1
    settle()
    assert postconf(postfix_dir, '-h', 'relayhost', 'smtp_sasl_auth_enable').split() == ['[a.example]:587', 'yes']


def test_configure_creates_missing_main_cf_except_in_check_mode(postfix_dir, settle):
    (postfix_dir / 'main.cf').unlink()
    postfix = Postfix(str(postfix_dir))
    checked = configure(postfix, {'relayhost': '[a]:587'}, services=[{'name': 'relay', 'chroot': 'n'}],
                        check_mode=True)
    assert checked['changed_parameters'] == ['relayhost']
    assert checked['changed_services'] == ['relay/unix']
    assert not (postfix_dir / 'main.cf').exists()
    applied = configure(postfix, {'relayhost': '[a]:587'}, services=[{'name': 'relay', 'chroot': 'n'}])
    assert applied['changed_parameters'] == checked['changed_parameters']
    settle()
    assert postconf(postfix_dir, '-n').splitlines() == ['config_directory = %s' % postfix_dir, 'relayhost = [a]:587']


def test_configure_rejects_a_missing_config_dir(tmp_path):
    with pytest.raises(ValidationError, match='does not exist'):
        configure(Postfix(str(tmp_path / 'nope')), {'relayhost': 'x'})
