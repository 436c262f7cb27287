# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the smarthost.postfix collection: no compatibility promise to other collections.
"""Postfix lookup-table files: parse, plan, render, write, compile with postmap.

One implementation serves the sasl_map, lookup_table and postfix_config modules; the SASL
map's own rules are in sasl.py, the file writing in files.py.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import shutil
import tempfile
import typing

from ansible_collections.smarthost.postfix.plugins.module_utils.files import (
    POSTMAP_PREFIX,
    atomic_write,
    attributes_differ,
    backup_file,
    locked,
    private_copy,
    private_umask,
    recover,
    set_attributes,
    wanted_owner,
)
from ansible_collections.smarthost.postfix.plugins.module_utils.postfix import PostfixError
from ansible_collections.smarthost.postfix.plugins.module_utils.rules import (
    POSTFIX_SPACE,
    ValidationError,
    compiled_path,
    is_continuation,
    is_ignored_line,
    physical_lines,
    strip_postfix_space,
    text_problem,
)

# Tables searched top to bottom, where the first match wins: order of entries matters.
FIRST_MATCH_TYPES = ("regexp", "pcre", "cidr")
# Tables whose key is a /pattern/ rather than a single word.
PATTERN_TYPES = ("regexp", "pcre")
_WHITESPACE_RE = re.compile(r"\s")


@dataclasses.dataclass
class Entry:
    """One key/value entry; `raw` keeps the original text of an entry we did not change."""

    key: str
    value: str
    raw: str = None
    line: int = None  # where it starts in the file it was read from

    def text(self):
        return self.raw if self.raw is not None else "%s %s" % (self.key, self.value)


@dataclasses.dataclass
class TableChange:
    """The outcome of ensure_table(): the new file items and which keys changed how."""

    items: list
    added: list
    removed: list
    updated: list
    reordered: bool = False


@dataclasses.dataclass(frozen=True)
class Masks:
    """How a table is shown in a diff and in the result: before(key, value) and after(key, value)
    give the shown value, key(entry) how a key read from the file is shown. None shows it as is."""

    before: typing.Callable | None = None
    after: typing.Callable | None = None
    key: typing.Callable | None = None


def key_identity(key, map_type):
    """postmap folds keys of indexed tables (Unicode case folding with SMTPUTF8, which Postfix
    3.x enables); patterns and networks are exact."""
    return key if map_type in FIRST_MATCH_TYPES else key.casefold()


def _split_pattern(line):
    """Split a regexp/pcre line into (pattern with delimiters and flags, rest)."""
    start = 1 if line.startswith("!") else 0
    if len(line) <= start or line[start].isalnum() or line[start] in POSTFIX_SPACE:
        return None
    delimiter = line[start]
    index = start + 1
    while index < len(line):
        if line[index] == "\\":
            index += 2
            continue
        if line[index] == delimiter:
            break
        index += 1
    else:
        return None
    end = index + 1
    while end < len(line) and line[end] not in POSTFIX_SPACE:
        end += 1
    return line[:end], line[end:]


def split_entry(line, map_type):
    """Split one logical table line into (key, value) at Postfix's white space (only its own:
    U+00A0 or U+3000 are part of a key or value to Postfix)."""
    line = line.lstrip(POSTFIX_SPACE)
    if map_type in PATTERN_TYPES:
        parts = _split_pattern(line)
        if parts is not None:
            return parts[0], strip_postfix_space(parts[1])
    end = 0
    while end < len(line) and line[end] not in POSTFIX_SPACE:
        end += 1
    return line[:end], strip_postfix_space(line[end:])


def parse_table(text, map_type):
    """Parse a table source into items: Entry objects and verbatim comment/blank lines.

    Exactly as postmap reads it (rules.logical_lines): lines end at '\n' only; empty, blank and
    '#' lines are skipped; a line that starts with white space continues the entry before it,
    appended as it is, even across skipped lines. Skipped lines inside an entry stay in its raw
    text, so an entry that does not change is written back byte for byte.
    """
    items = []
    entry, logical, skipped = None, None, []
    for number, line in enumerate(physical_lines(text), 1):
        if is_ignored_line(line):
            skipped.append(line)
            continue
        if is_continuation(line) and entry is not None:
            logical += line
            entry.value = split_entry(logical, map_type)[1]
            entry.raw = "\n".join([entry.raw] + skipped + [line])
            skipped = []
            continue
        items.extend(skipped)
        skipped = []
        logical = line
        key, value = split_entry(line, map_type)
        entry = Entry(key, value, raw=line, line=number)
        items.append(entry)
    items.extend(skipped)
    return items


def source_entries(items, map_type):
    """{folded key: value} that postmap builds from parsed items: the first of duplicate keys wins
    (postmap warns about the others), an entry without a value is skipped."""
    entries = {}
    for item in items:
        if isinstance(item, Entry) and item.value:
            entries.setdefault(key_identity(item.key, map_type), item.value)
    return entries


def _masked_comment(line, mask):
    """A comment that looks like a commented-out `key user:secret` entry, masked like one."""
    body = line.strip()[1:].strip()
    parts = body.split(None, 1)
    if len(parts) == 2 and ":" in parts[1]:
        return "# %s %s" % (parts[0], mask(parts[0], parts[1]))
    return line


def render_table(items, mask=None, shown_key=None):
    """File text for items. With `mask(key, value) -> shown value`, a display copy for diffs
    (then commented-out entries are masked too); shown_key(entry) replaces keys read from a file
    that must not be shown as they are."""
    lines = []
    for item in items:
        if not isinstance(item, Entry):
            lines.append(_masked_comment(item, mask) if mask is not None and item.strip() else item)
        elif mask is not None:
            key = shown_key(item) if shown_key is not None else item.key
            lines.append("%s %s" % (key, mask(item.key, item.value)))
        else:
            lines.append(item.text())
    return "".join(line + "\n" for line in lines)


def validate_entries(entries, map_type, state="present"):
    """Check desired (key, value) pairs before anything is written; errors name the key."""
    seen = {}
    for key, value in entries:
        if not key or not key.strip():
            raise ValidationError("an entry has an empty key")
        problem = text_problem(key)
        if problem:
            raise ValidationError("entry %r: the key %s" % (key, problem))
        if key != key.strip():
            raise ValidationError("entry %r: the key has leading or trailing whitespace" % key)
        if key.startswith("#"):
            raise ValidationError("entry %r: a key starting with # would be read as a comment" % key)
        if map_type not in PATTERN_TYPES and _WHITESPACE_RE.search(key):
            raise ValidationError("entry %r: %s table keys cannot contain whitespace" % (key, map_type))
        if map_type in PATTERN_TYPES:
            pattern = _split_pattern(key)
            if pattern is None or pattern[1]:
                raise ValidationError("entry %r: a %s key must be one /pattern/ with optional flags" % (key, map_type))
        if map_type == "cidr" and not _is_network(key):
            raise ValidationError("entry %r: not an IP address or network/prefix without host bits" % key)
        identity = key_identity(key, map_type)
        if identity in seen:
            raise ValidationError("entry %r is listed more than once (as %r)" % (key, seen[identity]))
        seen[identity] = key
        if state != "present":
            continue
        if value is None or not value.strip():
            raise ValidationError("entry %r: the value is empty" % key)
        # Never the value itself: in a SASL map it holds the password.
        problem = text_problem(value)
        if problem:
            raise ValidationError("entry %r: the value %s" % (key, problem))


def table_entries(entries, map_type, state="present"):
    """Validate lookup_table entries and return [(key, value)] with values as postmap reads them."""
    pairs = []
    for entry in entries:
        key = entry.get("key") or ""
        value = entry.get("value")
        pairs.append((key, None if value is None else strip_postfix_space(str(value))))
    validate_entries(pairs, map_type, state)
    return pairs


def _is_network(text):
    try:
        ipaddress.ip_network(text, strict=True)
    except ValueError:
        return False
    return True


def ensure_table(items, desired, map_type, state="present", exclusive=False, merge=None):
    """Plan a table: the one comparison both map modules use.

    items: the parsed current file. desired: list of (key, value) in the wanted order.
    state present adds/updates the listed keys (exclusive: and removes all others);
    state absent removes the listed keys. merge(current_value, desired_value) decides the
    value of a key that already exists (default: the desired value).
    Comments and untouched entries keep their place; new entries are appended. For
    first-match tables with exclusive, entries are put in the desired order.
    """
    wanted = {}
    for key, value in desired:
        wanted[key_identity(key, map_type)] = (key, value)
    added, removed, updated = [], [], []
    result, seen = [], set()
    for item in items:
        if not isinstance(item, Entry):
            result.append(item)
            continue
        identity = key_identity(item.key, map_type)
        managed = identity in wanted or (exclusive and state == "present")
        if identity in seen:
            if not managed:
                result.append(item)
            continue  # a later duplicate of a managed key: Postfix would ignore it anyway
        seen.add(identity)
        if identity not in wanted:
            if managed:
                removed.append(item.key)
            else:
                result.append(item)
            continue
        if state == "absent":
            removed.append(item.key)
            continue
        value = wanted[identity][1]
        if merge is not None:
            value = merge(item.value, value)
        if value == item.value:
            result.append(item)
        else:
            updated.append(item.key)
            result.append(Entry(item.key, value))
    if state == "present":
        for identity, (key, value) in wanted.items():
            if identity not in seen:
                added.append(key)
                result.append(Entry(key, value))
    reordered = False
    if state == "present" and exclusive and map_type in FIRST_MATCH_TYPES:
        order = list(wanted)
        entries = [item for item in result if isinstance(item, Entry)]
        in_order = sorted(entries, key=lambda entry: order.index(key_identity(entry.key, map_type)))
        if in_order != entries:
            reordered = True
            # Comments keep their lines; the entry slots are filled in the desired order.
            queue = iter(in_order)
            result = [next(queue) if isinstance(item, Entry) else item for item in result]
    return TableChange(result, added, removed, updated, reordered)


# --------------------------------------------------------------------------- files


def compiled_state(postfix, path, map_type, items):
    """(differs, what the compiled map holds): differs is True when the compiled map is missing
    or holds other entries than the source items, judged by content (postmap -s), never by file
    times, which a concurrent run or a copied file gets wrong."""
    target = compiled_path(path, map_type)
    if target is None:
        return False, None
    if not os.path.exists(target):
        return True, None
    try:
        held = _folded(postfix.dump_map("%s:%s" % (map_type, path)), map_type)
    except PostfixError:
        return True, None  # unreadable: build it again
    return held != source_entries(items, map_type), held


def _folded(entries, map_type):
    return {key_identity(key, map_type): value for key, value in entries.items()}


def compile_table(postfix, path, map_type, mode, uid=None, gid=None, unless_holding=None):
    """Build the compiled map with postmap and put it in place atomically with mode/owner.

    postmap writes its output next to its input, and an existing output keeps its old
    mode (postmap 3.7 re-uses a world-readable .db as is). So we run postmap on a 0600 copy
    of the source inside a fresh mkdtemp directory (mode 0700, same file system), under umask
    077 so that its output is 0600 too, set mode and owner on the result, then rename it over
    the old map: no copy of a secret is ever readable by others, and Postfix never sees a half
    built file. unless_holding: the entries the current map holds; when the new build holds the
    same, it is thrown away (our reading of the source and postmap's differed, the map was not
    stale). Returns whether the map was replaced.
    """
    target = compiled_path(path, map_type)
    workdir = tempfile.mkdtemp(prefix=POSTMAP_PREFIX, dir=os.path.dirname(path) or ".")
    try:
        source_copy = os.path.join(workdir, os.path.basename(path))
        private_copy(path, source_copy)
        with private_umask(), postfix.usable() as tools:
            tools.postmap("%s:%s" % (map_type, source_copy))
        built = compiled_path(source_copy, map_type)
        if (
            unless_holding is not None
            and _folded(postfix.dump_map("%s:%s" % (map_type, source_copy)), map_type) == unless_holding
        ):
            return False
        set_attributes(built, mode, uid, gid)
        os.rename(built, target)
        return True
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def resolve_map_type(postfix, requested=None):
    """The requested type, or the host's default_database_type; must be in `postconf -m`."""
    map_type = requested or postfix.default_database_type()
    available = postfix.map_types()
    if map_type not in available:
        raise ValidationError(
            "map type %s is not available on this host (postconf -m lists: %s)" % (map_type, ", ".join(available))
        )
    return map_type


def manage_table(
    postfix,
    path,
    map_type,
    desired,
    state="present",
    exclusive=False,
    mode=0o644,
    check_mode=False,
    backup=False,
    merge=None,
    diff_masks=None,
    recover_first=True,
    want_diff=True,
):
    """Ensure a table file (and its compiled map) hold the desired entries: the routine
    behind both map modules.

    desired: list of (key, value), already validated. diff_masks(old_items) returns the Masks
    for the diff and the reported keys; without it keys and values are shown as they are.
    Read, write, postmap and rename happen under one lock on the table's directory, after what
    a killed run left there is finished (files.recover; recover_first=False when the caller did
    that already). Returns the module result plus a `diff` dict (None unless want_diff: rendering a
    100,000-entry map twice for a diff nobody asked for costs seconds) and `_warnings`.
    """
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        raise ValidationError("directory %s does not exist" % directory)
    with locked([directory]):
        recovered = recover(directory, [os.path.basename(path)], check_mode) if recover_first else []
        result = _manage_locked(
            postfix, path, map_type, desired, state, exclusive, mode, check_mode, backup, merge, diff_masks, want_diff
        )
    if recovered:
        result["changed"] = True
        result["_warnings"] = recovered + result["_warnings"]
    return result


def _manage_locked(
    postfix, path, map_type, desired, state, exclusive, mode, check_mode, backup, merge, diff_masks, want_diff
):
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as handle:
            old_text = handle.read()
    except FileNotFoundError:
        old_text = None
    old_items = parse_table(old_text, map_type)
    change = ensure_table(old_items, desired, map_type, state, exclusive, merge)
    new_text = render_table(change.items)
    uid, gid = wanted_owner()
    masks = diff_masks(old_items) if diff_masks is not None else Masks()
    target = compiled_path(path, map_type)

    content_changed = new_text != old_text
    source_attributes = old_text is not None and not content_changed and attributes_differ(path, mode, uid, gid)
    held = None
    if target is None:
        compile_needed = False
    elif content_changed:
        compile_needed = True
    else:
        compile_needed, held = compiled_state(postfix, path, map_type, old_items)
    compiled_attributes = (
        target is not None
        and not compile_needed
        and os.path.exists(target)
        and attributes_differ(target, mode, uid, gid)
    )

    result = {
        "changed": bool(content_changed or source_attributes or compile_needed or compiled_attributes),
        "map": "%s:%s" % (map_type, path),
        "type": map_type,
        "keys_added": change.added,
        "keys_removed": _shown_keys(change.removed, old_items, map_type, masks.key),
        "keys_updated": _shown_keys(change.updated, old_items, map_type, masks.key),
        "compiled": bool(compile_needed),
        "backup_file": None,
        "diff": {
            "before_header": path,
            "after_header": path,
            "before": render_table(old_items, masks.before, masks.key) if old_text is not None else "",
            "after": render_table(change.items, masks.after, masks.key),
        }
        if want_diff
        else None,
        "_warnings": [],
    }
    if check_mode:
        return result
    if content_changed:
        if backup and old_text is not None:
            result["backup_file"] = backup_file(path, mode)
        atomic_write(path, new_text.encode("utf-8", "surrogateescape"), mode, uid, gid)
    elif source_attributes:
        set_attributes(path, mode, uid, gid)
    if compile_needed:
        replaced = compile_table(postfix, path, map_type, mode, uid, gid, unless_holding=held)
        if not replaced:
            # postmap read the source as the map already held it: nothing was stale after all.
            result["compiled"] = False
            result["changed"] = bool(content_changed or source_attributes or attributes_differ(target, mode, uid, gid))
            if attributes_differ(target, mode, uid, gid):
                set_attributes(target, mode, uid, gid)
    elif compiled_attributes:
        set_attributes(target, mode, uid, gid)
    return result


def _shown_keys(keys, items, map_type, shown_key):
    """Keys read from the file, each as shown_key shows its entry (a SASL map never echoes a key
    that is not one: it may be a fragment of a password)."""
    if shown_key is None:
        return list(keys)
    entries = {}
    for item in items:
        if isinstance(item, Entry):
            entries.setdefault(item.key, item)
    return [shown_key(entries[key]) if key in entries else key for key in keys]
