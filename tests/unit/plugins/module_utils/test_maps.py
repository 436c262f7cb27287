# -*- coding: utf-8 -*-
# Copyright (c) 2025, smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Lookup-table machinery: parsing, planning, files, postmap (real binary, temporary dirs)."""

from __future__ import annotations

import os
import stat
import subprocess
import time

import pytest

from ansible_collections.smarthost.postfix.plugins.module_utils.maps import (
    Entry,
    atomic_write,
    backup_file,
    compile_table,
    compiled_is_stale,
    compiled_path,
    ensure_table,
    keep_password,
    manage_table,
    parse_table,
    render_table,
    resolve_map_type,
    sasl_entries,
    sasl_key_error,
    sasl_masks,
    table_entries,
    validate_entries,
)
from ansible_collections.smarthost.postfix.plugins.module_utils.postfix import Postfix, ValidationError


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def lookup(config_dir, map_name, key):
    return subprocess.run(['postmap', '-c', str(config_dir), '-q', key, map_name], stdout=subprocess.PIPE,
                          universal_newlines=True, check=False).stdout.strip()


def entries_of(items):
    return [(item.key, item.value) for item in items if isinstance(item, Entry)]


# --------------------------------------------------------------------------- parse and render

TABLE = """\
# transport routes
example.org   smtp:[relay.example]:587

example.net smtp:[one.example]
    :2525
# trailing comment
"""


def test_parse_table_reads_like_postmap():
    items = parse_table(TABLE, 'hash')
    assert entries_of(items) == [('example.org', 'smtp:[relay.example]:587'), ('example.net', 'smtp:[one.example] :2525')]
    assert items[0] == '# transport routes'
    assert items[2] == ''


def test_render_of_unchanged_table_is_byte_identical():
    assert render_table(parse_table(TABLE, 'hash')) == TABLE


def test_parse_patterns_keep_whitespace_and_flags():
    items = parse_table('/^Subject: .*win/i    REJECT spam\n!/^From:/ DUNNO\n#/x/ IGNORE\n', 'regexp')
    assert entries_of(items) == [('/^Subject: .*win/i', 'REJECT spam'), ('!/^From:/', 'DUNNO')]


def test_render_with_mask_shows_masked_values_and_commented_out_entries():
    items = parse_table('# plain note\n#[old]:587 olduser:oldpw\n\n[a]:587 user:pw\n', 'hash')
    shown = render_table(items, lambda key, value: value.partition(':')[0] + ':***')
    assert shown == '# plain note\n# [old]:587 olduser:***\n\n[a]:587 user:***\n'


@pytest.mark.parametrize('map_type, suffix', [
    ('hash', '.db'), ('btree', '.db'), ('lmdb', '.lmdb'), ('cdb', '.cdb'),
    ('texthash', None), ('regexp', None), ('pcre', None), ('cidr', None), ('inline', None),
])
def test_compiled_path(map_type, suffix):
    assert compiled_path('/etc/postfix/x', map_type) == (None if suffix is None else '/etc/postfix/x' + suffix)


# --------------------------------------------------------------------------- planning

def test_ensure_present_updates_in_place_and_appends():
    items = parse_table('# keep me\nA.example old\nb.example same\n', 'hash')
    change = ensure_table(items, [('a.example', 'new'), ('b.example', 'same'), ('c.example', 'added')], 'hash')
    assert render_table(change.items) == '# keep me\nA.example new\nb.example same\nc.example added\n'
    assert (change.added, change.removed, change.updated) == (['c.example'], [], ['A.example'])


def test_ensure_absent_and_exclusive():
    items = parse_table('a x\n# c\nb y\nc z\n', 'hash')
    absent = ensure_table(items, [('b', None), ('missing', None)], 'hash', state='absent')
    assert render_table(absent.items) == 'a x\n# c\nc z\n'
    assert absent.removed == ['b']
    exclusive = ensure_table(items, [('c', 'z')], 'hash', exclusive=True)
    assert render_table(exclusive.items) == '# c\nc z\n'
    assert exclusive.removed == ['a', 'b'] and not exclusive.added and not exclusive.updated


def test_ensure_drops_later_duplicates_of_managed_keys():
    change = ensure_table(parse_table('a 1\nb 2\nA 3\n', 'hash'), [('a', '1')], 'hash')
    assert render_table(change.items) == 'a 1\nb 2\n'


def test_ensure_merge_decides_existing_values():
    items = parse_table('[a]:587 olduser:oldpw\n', 'hash')
    change = ensure_table(items, [('[a]:587', 'newuser:newpw'), ('[b]', 'u:p')], 'hash', merge=keep_password)
    assert entries_of(change.items) == [('[a]:587', 'newuser:oldpw'), ('[b]', 'u:p')]


def test_first_match_tables_follow_the_given_order_when_exclusive():
    items = parse_table('# header\n/b/ B\n/a/ A\n', 'regexp')
    change = ensure_table(items, [('/a/', 'A'), ('/b/', 'B')], 'regexp', exclusive=True)
    assert change.reordered
    assert render_table(change.items) == '# header\n/a/ A\n/b/ B\n'
    # without exclusive, existing order stays and new entries are appended
    kept = ensure_table(items, [('/a/', 'A'), ('/c/', 'C')], 'regexp')
    assert render_table(kept.items) == '# header\n/b/ B\n/a/ A\n/c/ C\n'


def test_pattern_keys_are_case_sensitive_indexed_keys_are_not():
    assert ensure_table(parse_table('/A/ x\n', 'regexp'), [('/a/', 'x')], 'regexp').added == ['/a/']
    assert ensure_table(parse_table('A x\n', 'hash'), [('a', 'x')], 'hash').added == []


@pytest.mark.parametrize('map_type, key, value, message', [
    ('hash', '', 'v', 'empty key'),
    ('hash', 'a b', 'v', 'cannot contain whitespace'),
    ('hash', 'a\nb', 'v', 'line break'),
    ('hash', 'a', 'v\nw', 'line break'),
    ('hash', 'a', '', 'value is empty'),
    ('hash', '#a', 'v', 'comment'),
    ('regexp', 'no-slashes', 'v', 'one /pattern/'),
    ('pcre', '/a/ extra', 'v', 'one /pattern/'),
    ('cidr', '10.0.0.1/8', 'REJECT', 'host bits'),
    ('cidr', 'not-an-ip', 'REJECT', 'host bits'),
])
def test_validate_entries(map_type, key, value, message):
    with pytest.raises(ValidationError, match=message):
        validate_entries([(key, value)], map_type)


def test_validate_rejects_duplicates_by_lookup_identity():
    with pytest.raises(ValidationError, match='more than once'):
        validate_entries([('Example.org', 'a'), ('example.ORG', 'b')], 'hash')
    validate_entries([('/A/', 'a'), ('/a/', 'b')], 'regexp')


def test_table_entries_strip_values_like_postmap():
    assert table_entries([{'key': 'a', 'value': '  x  '}], 'hash') == [('a', 'x')]
    assert table_entries([{'key': 'a', 'value': None}], 'hash', 'absent') == [('a', None)]


# --------------------------------------------------------------------------- SASL specifics

@pytest.mark.parametrize('key', [
    '[email-smtp.eu-west-1.amazonaws.com]:587', '[smtp.example.com]', 'smtp.example.com:2525',
    'smtp.example.com', '[192.0.2.10]:465', '192.0.2.10', '[2001:db8::1]:587', 'user@example.com',
    '@example.com', 'relay', '[smtp.example.com]:65535',
])
def test_valid_sasl_keys(key):
    assert sasl_key_error(key) is None


@pytest.mark.parametrize('key, reason', [
    ('[smtp.example.com]:0', 'invalid port'),
    ('[smtp.example.com]:65536', 'invalid port'),
    ('[smtp.example.com]:smtp', 'invalid port'),
    ('smtp.example.com:', 'invalid port'),
    ('2001:db8::1', 'in brackets'),
    ('[bad_host]:587', 'invalid host'),
    ('-bad.example', 'invalid host'),
    ('999.1.1.1', 'invalid host'),
    ('user@', 'invalid domain'),
    ('us er@example.com', 'invalid local part'),
    ('[smtp.example.com', 'invalid host'),
])
def test_invalid_sasl_keys(key, reason):
    assert reason in sasl_key_error(key)


PASSWORD = 'Pa55:w0rd#with spaces inside'


@pytest.mark.parametrize('entry, message', [
    ({'key': '[a.example]:587', 'username': '', 'password': PASSWORD}, 'username is missing'),
    ({'key': '[a.example]:587', 'username': 'us:er', 'password': PASSWORD}, 'must not contain ":"'),
    ({'key': '[a.example]:587', 'username': 'us er', 'password': PASSWORD}, 'whitespace'),
    ({'key': '[a.example]:587', 'username': 'user', 'password': ''}, 'password is missing'),
    ({'key': '[a.example]:587', 'username': 'user', 'password': PASSWORD + '\n'}, 'line break'),
    ({'key': '[a.example]:587', 'username': 'user', 'password': ' ' + PASSWORD}, 'leading or trailing'),
    ({'key': '[a.example]:587', 'username': 'user', 'password': PASSWORD + '\t'}, 'leading or trailing'),
    ({'key': '[a.example]:99999', 'username': 'user', 'password': PASSWORD}, 'invalid port'),
])
def test_sasl_entries_errors_name_the_key_never_the_password(entry, message):
    with pytest.raises(ValidationError, match=message) as caught:
        sasl_entries([entry])
    assert entry['key'] in str(caught.value)
    assert PASSWORD.strip() not in str(caught.value)


def test_sasl_entries_rejects_duplicate_keys():
    entries = [{'key': '[A.example]:587', 'username': 'u', 'password': 'p'},
               {'key': '[a.example]:587', 'username': 'v', 'password': 'q'}]
    with pytest.raises(ValidationError, match='more than once'):
        sasl_entries(entries)


def test_sasl_entries_values_and_absent():
    assert sasl_entries([{'key': '@example.com', 'username': 'u', 'password': 'p:w'}]) == [('@example.com', 'u:p:w')]
    assert sasl_entries([{'key': '@example.com'}], 'absent') == [('@example.com', None)]


def test_sasl_masks_hide_passwords_and_flag_changes():
    old = parse_table('[a]:587 user:old\n', 'hash')
    before, after = sasl_masks(old)
    assert before('[a]:587', 'user:old') == 'user:********'
    assert after('[A]:587', 'user:new') == 'user:******** (password changed)'
    assert after('[a]:587', 'user:old') == 'user:********'
    assert after('[b]', 'other:pw') == 'other:********'


# --------------------------------------------------------------------------- files

def test_atomic_write_sets_mode_before_the_file_appears(tmp_path):
    path = str(tmp_path / 'table')
    atomic_write(path, b'a b\n', 0o600, 0, 0)
    assert mode_of(path) == 0o600
    assert os.stat(path).st_uid == 0
    atomic_write(path, b'c d\n', 0o640)
    assert (tmp_path / 'table').read_text() == 'c d\n'
    assert mode_of(path) == 0o640
    assert os.listdir(str(tmp_path)) == ['table']


def test_backup_keeps_content_and_mode(tmp_path):
    source = tmp_path / 'sasl_passwd'
    source.write_text('[a] u:p\n')
    source.chmod(0o600)
    backup = backup_file(str(source))
    assert backup.startswith(str(source) + '.') and backup.endswith('~')
    assert open(backup).read() == '[a] u:p\n'
    assert mode_of(backup) == 0o600


def test_compile_builds_in_a_private_directory(postfix_dir, tmp_path, tool_log):
    path = str(tmp_path / 'sasl_passwd')
    atomic_write(path, b'[a.example]:587 user:pw\n', 0o600, 0, 0)
    compile_table(Postfix(str(postfix_dir)), path, 'hash', 0o600, 0, 0)
    assert mode_of(path + '.db') == 0o600
    assert lookup(postfix_dir, 'hash:' + path, '[a.example]:587') == 'user:pw'
    build = tool_log.calls('postmap')[0]
    assert build[-2].startswith('hash:') and not build[-2].endswith(':' + path)
    assert build[-1] == 'dirmode=700'
    assert not [name for name in os.listdir(str(tmp_path)) if name.startswith('.postmap-')]


def test_stale_detection(postfix_dir, tmp_path):
    path = str(tmp_path / 'transport')
    atomic_write(path, b'a b\n', 0o644)
    assert compiled_is_stale(path, 'hash')
    compile_table(Postfix(str(postfix_dir)), path, 'hash', 0o644)
    assert not compiled_is_stale(path, 'hash')
    future = time.time() + 10
    os.utime(path, (future, future))
    assert compiled_is_stale(path, 'hash')
    assert not compiled_is_stale(path, 'regexp')


def test_resolve_map_type(postfix_dir):
    postfix = Postfix(str(postfix_dir))
    assert resolve_map_type(postfix) == postfix.default_database_type()
    with pytest.raises(ValidationError, match='postconf -m lists'):
        resolve_map_type(postfix, 'nosuchtype')


def test_manage_table_check_mode_writes_nothing(postfix_dir, tmp_path):
    path = str(tmp_path / 'transport')
    postfix = Postfix(str(postfix_dir))
    checked = manage_table(postfix, path, 'hash', [('a.example', 'smtp:[r]:587')], check_mode=True)
    assert checked['changed'] and checked['compiled'] and checked['keys_added'] == ['a.example']
    assert not os.path.exists(path) and not os.path.exists(path + '.db')
    applied = manage_table(postfix, path, 'hash', [('a.example', 'smtp:[r]:587')])
    assert {k: v for k, v in applied.items() if k != 'backup_file'} == {
        k: v for k, v in checked.items() if k != 'backup_file'}
    again = manage_table(postfix, path, 'hash', [('a.example', 'smtp:[r]:587')])
    assert not again['changed'] and not again['compiled']


def test_manage_table_fixes_modes_of_existing_files(postfix_dir, tmp_path):
    path = str(tmp_path / 'sasl_passwd')
    postfix = Postfix(str(postfix_dir))
    manage_table(postfix, path, 'hash', [('[a]', 'u:p')], mode=0o600)
    os.chmod(path + '.db', 0o644)
    result = manage_table(postfix, path, 'hash', [('[a]', 'u:p')], mode=0o600)
    assert result['changed'] and not result['compiled']
    assert mode_of(path + '.db') == 0o600
    os.chmod(path, 0o644)
    assert manage_table(postfix, path, 'hash', [('[a]', 'u:p')], mode=0o600)['changed']
    assert mode_of(path) == 0o600


def test_manage_table_needs_an_existing_directory(postfix_dir, tmp_path):
    with pytest.raises(ValidationError, match='does not exist'):
        manage_table(Postfix(str(postfix_dir)), str(tmp_path / 'no' / 'table'), 'hash', [('a', 'b')])


def test_sasl_diff_masks_a_username_that_is_the_secret():
    # Postmark's server token is both the username and the password.
    token = '00000000-aaaa-4bbb-8ccc-token0000001'
    before, after = sasl_masks([])
    assert token not in after('[smtp.postmarkapp.com]:587', '%s:%s' % (token, token))
    assert token not in before('[smtp.postmarkapp.com]:587', '%s:%s' % (token, token))
    assert after('[smtp.sendgrid.net]:587', 'apikey:SG.secret').startswith('apikey:')
