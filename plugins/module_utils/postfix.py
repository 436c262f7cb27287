# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the smarthost.postfix collection: no compatibility promise to other collections.
"""The one Postfix command-line layer of smarthost.postfix.

Everything that runs postconf, postmap or postfix and parses what they print lives here.
Deciding which invocations a desired state needs is config_plan.py's job; modules only
translate between Ansible options and these functions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pty
import re
import shutil
import subprocess
import tempfile

from ansible_collections.smarthost.postfix.plugins.module_utils.files import read_text
from ansible_collections.smarthost.postfix.plugins.module_utils.rules import (
    POSTFIX_SPACE,
    logical_lines,
    physical_lines,
    strip_postfix_space,
)

# Where Postfix installs its tools when PATH (e.g. a non-login shell) lacks the sbin directories.
SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")

SERVICE_TYPES = ("inet", "unix", "unix-dgram", "fifo", "pass")
# The five flag/limit columns of a master.cf entry, as the postconf module names them,
# mapped to the names `postconf -F` uses.
MASTER_FIELDS = (
    ("private", "private"),
    ("unpriv", "unprivileged"),
    ("chroot", "chroot"),
    ("wakeup", "wakeup"),
    ("maxproc", "process_limit"),
)
# $name, ${name}, ${name?value}, ${name:value}, $(name) ... : only the name matters here.
_REFERENCE_RE = re.compile(r"\$(?:\{([A-Za-z0-9_]+)|\(([A-Za-z0-9_]+)|([A-Za-z0-9_]+))")
# `-o {name=value with spaces}` keeps its braces as one token.
_COMMAND_TOKEN_RE = re.compile(r"\{[^}]*\}|\S+")

# master(8) reads these only when it starts: a change needs `postfix stop/start`, not a reload.
RESTART_PARAMETERS = ("inet_interfaces", "inet_protocols")

# Postfix 3.6 introduced the ">=TLSv1.2" protocol range syntax.
MODERN_TLS_SYNTAX_VERSION = (3, 6)


class PostfixError(Exception):
    """A Postfix tool failed. Carries the command line, exit code and what Postfix printed.

    message is our own text; stderr is what the tool printed, the only part a module scrubs of
    secrets (module_support.run_and_exit).
    """

    def __init__(self, message, cmd=None, rc=None, stderr=""):
        self.message = message
        self.cmd = list(cmd or [])
        self.rc = rc
        self.stderr = (stderr or "").strip()
        # What had been changed when the tool failed (config_plan.configure), empty when nothing.
        self.applied = []
        super().__init__(message)

    def __str__(self):
        return "%s: %s" % (self.message, self.stderr) if self.stderr else self.message


def find_binary(name):
    """Return the path of a Postfix tool from PATH or the sbin directories, or None."""
    directories = os.environ.get("PATH", "").split(os.pathsep) + list(SBIN_DIRS)
    for directory in directories:
        if not directory:
            continue
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def run_subprocess(cmd):
    """Default runner: same (rc, stdout, stderr) contract as AnsibleModule.run_command."""
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
    return proc.returncode, proc.stdout, proc.stderr


def _run_with_terminal(cmd):
    """Run cmd with stdout/stderr on a pseudo-terminal and return (rc, output).

    `postfix check` reports its findings on stderr only when stderr is a terminal
    (otherwise only to syslog), so a pipe would lose the reason of a failure.
    """
    master_fd, slave_fd = pty.openpty()
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=slave_fd, stderr=slave_fd, close_fds=True)
    finally:
        os.close(slave_fd)
    chunks = []
    try:
        while True:
            try:
                chunk = os.read(master_fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(master_fd)
    rc = proc.wait()
    return rc, b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")


def parse_settings(text):
    """Parse `name = value` lines as printed by `postconf`, `postconf -n/-d` or `postconf -P`."""
    settings = {}
    for line in physical_lines(text):
        if line.endswith(" ="):
            settings[line[:-2]] = ""
        elif " = " in line:
            name, value = line.split(" = ", 1)
            settings[name] = value
    return settings


def read_main_cf(path):
    """Parse main.cf the way Postfix reads it: logical lines, comments, last definition wins.

    Only needed for names `postconf -n` hides (user-defined names nothing refers to).
    """
    settings = {}
    for _number, logical in logical_lines(read_text(path)):
        if "=" in logical:
            name, value = logical.split("=", 1)
            settings[strip_postfix_space(name)] = normalize_whitespace(value)
    return settings


_POSTFIX_SPACE_RUN = re.compile("[%s]+" % re.escape(POSTFIX_SPACE))


def normalize_whitespace(text):
    """A value with each run of Postfix's white space as one space, none at the ends.

    Only Postfix's own white space: U+00A0 or U+3000 are characters of the value to Postfix.
    """
    return strip_postfix_space(_POSTFIX_SPACE_RUN.sub(" ", text))


def referenced_names(value):
    """Names a main.cf or master.cf value refers to as $name, ${name...} or $(name...)."""
    names = set()
    for match in _REFERENCE_RE.finditer(value or ""):
        names.add(next(group for group in match.groups() if group))
    return names


def parse_version(text):
    """'3.7.11' -> (3, 7, 11); snapshot suffixes such as '3.10-20240101' are ignored."""
    match = re.match(r"\d+(\.\d+)*", text.strip())
    return tuple(int(part) for part in match.group(0).split(".")) if match else ()


def tls_min_version_syntax(mail_version):
    """'modern' when Postfix accepts `>=TLSv1.2` protocol ranges (3.6+), else 'legacy'."""
    return "modern" if parse_version(mail_version)[:2] >= MODERN_TLS_SYNTAX_VERSION else "legacy"


# --------------------------------------------------------------------------- master.cf model


def _override(token):
    """'name=value' or '{name = value}' -> (name, value)."""
    if token.startswith("{") and token.endswith("}"):
        token = token[1:-1]
    name, _equals, value = token.partition("=")
    return name.strip(), value.strip()


def split_command(command):
    """Split a master.cf command field into (command without overrides, {override: value}).

    Overrides are the `-o name=value` options between the program name and its first
    non-option argument, as Postfix itself treats them (`-o` after `argv=` belongs to
    pipe); they are returned in file order.
    """
    tokens = _COMMAND_TOKEN_RE.findall(command or "")
    kept = tokens[:1]
    overrides = {}
    index = 1
    while index < len(tokens):
        token = tokens[index]
        if not token.startswith("-") or token == "--":
            break
        if token == "-o" and index + 1 < len(tokens):
            name, value = _override(tokens[index + 1])
            overrides[name] = value
            index += 2
            continue
        if token.startswith("-o"):
            name, value = _override(token[2:])
            overrides[name] = value
        else:
            kept.append(token)
        index += 1
    kept.extend(tokens[index:])
    return " ".join(kept), overrides


@dataclasses.dataclass
class MasterEntry:
    """One master.cf service: its columns, its command and its `-o` overrides."""

    name: str
    type: str
    private: str = "-"
    unpriv: str = "-"
    chroot: str = "-"
    wakeup: str = "-"
    maxproc: str = "-"
    command: str = ""
    options: dict = dataclasses.field(default_factory=dict)

    @property
    def key(self):
        return "%s/%s" % (self.name, self.type)

    def command_with_options(self):
        """The command field with the overrides placed right after the program name."""
        tokens = _COMMAND_TOKEN_RE.findall(self.command)
        overrides = []
        for name, value in self.options.items():
            setting = "%s=%s" % (name, value)
            overrides += ["-o", "{%s}" % setting if re.search(r"\s", setting) else setting]
        return " ".join(tokens[:1] + overrides + tokens[1:])

    def line(self):
        """The entry as one logical line, the form `postconf -M name/type=...` takes."""
        return " ".join(
            [
                self.name,
                self.type,
                self.private,
                self.unpriv,
                self.chroot,
                self.wakeup,
                self.maxproc,
                self.command_with_options(),
            ]
        )

    def render(self):
        """The entry as master.cf shows it, one override per line (for diffs)."""
        lines = [
            "%-10s %-5s %-7s %-7s %-7s %-7s %-7s %s"
            % (self.name, self.type, self.private, self.unpriv, self.chroot, self.wakeup, self.maxproc, self.command)
        ]
        for name, value in self.options.items():
            lines.append("  -o %s=%s" % (name, value))
        return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- the CLI


class Postfix:
    """Runs Postfix's tools against one configuration directory (`-c`) or Postfix's default."""

    def __init__(self, config_dir=None, runner=None):
        self.config_dir = config_dir
        self._runner = runner or run_subprocess
        self._config_directory = None
        # Warnings the tools printed while succeeding, once each, for the module to pass on.
        self.warnings = []

    # -- running -------------------------------------------------------------

    def command(self, tool, *args):
        binary = find_binary(tool)
        if binary is None:
            raise PostfixError("%s not found: is Postfix installed?" % tool)
        return [binary] + (["-c", self.config_dir] if self.config_dir else []) + list(args)

    def run(self, tool, *args):
        """Run a Postfix tool; return stdout or raise PostfixError with Postfix's stderr."""
        cmd = self.command(tool, *args)
        rc, out, err = self._runner(cmd)
        if rc != 0:
            raise PostfixError("%s failed (rc=%s)" % (" ".join([tool] + list(args[:1])), rc), cmd, rc, err)
        for line in physical_lines(err):
            line = line.strip()
            if "warning:" in line and line not in self.warnings:
                self.warnings.append(line)
        return out

    def postconf(self, *args):
        return self.run("postconf", *args)

    def postmap(self, *args):
        return self.run("postmap", *args)

    def check(self):
        """`postfix check`; raises PostfixError with Postfix's complaint when it fails."""
        cmd = self.command("postfix", "check")
        rc, output = _run_with_terminal(cmd)
        if rc != 0:
            raise PostfixError("postfix check failed (rc=%s)" % rc, cmd, rc, output)
        return output

    @contextlib.contextmanager
    def scratch(self, master_cf=""):
        """A throwaway config dir (empty main.cf, given master.cf) to ask postconf questions."""
        workdir = tempfile.mkdtemp(prefix="smarthost-postfix-")
        try:
            main_cf = os.path.join(workdir, "main.cf")
            with open(main_cf, "w", encoding="utf-8"):
                pass
            # postconf re-reads a main.cf younger than about two seconds until it stops
            # changing; this one is complete, so date it back and skip that wait.
            os.utime(main_cf, (0, 0))
            with open(os.path.join(workdir, "master.cf"), "w", encoding="utf-8") as handle:
                handle.write(master_cf)
            yield Postfix(workdir, self._runner)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    @contextlib.contextmanager
    def usable(self):
        """This instance, or a scratch one while main.cf does not exist yet.

        Debian's "No configuration" installs no main.cf, and postmap and postconf -m refuse to
        run without one; Postfix's built-in defaults (what an empty main.cf gives) are what they
        would have read.
        """
        if os.path.exists(self.main_cf_path()):
            yield self
        else:
            with self.scratch() as scratch:
                yield scratch

    # -- facts -----------------------------------------------------------------

    def config_directory(self):
        if self._config_directory is None:
            self._config_directory = self.config_dir or self.postconf("-dh", "config_directory").strip()
        return self._config_directory

    def main_cf_path(self):
        return os.path.join(self.config_directory(), "main.cf")

    def master_cf_path(self):
        return os.path.join(self.config_directory(), "master.cf")

    def mail_version(self):
        # -d: a compile-time fact, readable even before main.cf exists.
        return self.postconf("-dh", "mail_version").strip()

    def values(self, *names):
        """{name: effective value} of main.cf parameters in one postconf call; Postfix's defaults
        before main.cf exists (an empty relayhost, the built-in default_database_type)."""
        option = "-h" if os.path.exists(self.main_cf_path()) else "-dh"
        lines = self.postconf(option, *names).split("\n")
        return {name: line.strip() for name, line in zip(names, lines)}

    def default_database_type(self):
        """The effective default_database_type (main.cf may override the built-in one)."""
        return self.values("default_database_type")["default_database_type"]

    def relayhost(self):
        """Where this host relays now; empty without a main.cf or without a relayhost."""
        return self.values("relayhost")["relayhost"]

    def services(self):
        """master.cf's services by type, {"inet": [{name, syslog_name}], "unix": [...], ...}
        (syslog_name: its -o override or None); empty before both main.cf and master.cf exist.

        What listens where (inet), and which services a tool marked as its own by their
        syslog_name: the relay role's submission services (inet) and pacing clones (unix).
        """
        found = {}
        if not (os.path.exists(self.main_cf_path()) and os.path.exists(self.master_cf_path())):
            return found
        for entry in self.master_entries().values():
            found.setdefault(entry.type, []).append(
                {"name": entry.name, "syslog_name": entry.options.get("syslog_name")}
            )
        return found

    def map_types(self):
        """Lookup table types this Postfix supports (`postconf -m`)."""
        # postconf -m insists on a main.cf; the dynamic map list does not live there.
        with self.usable() as postfix:
            return postfix.postconf("-m").split()

    def dump_map(self, map_name):
        """{key: value} of a compiled map as postmap -s reads it back (keys as postmap folded them)."""
        with self.usable() as postfix:
            out = postfix.postmap("-s", map_name)
        entries = {}
        for line in physical_lines(out):
            key, _tab, value = line.partition("\t")
            entries.setdefault(key, value)
        return entries

    def parameter_names(self):
        """Every name postconf recognises here: built-in, service-defined and used user-defined."""
        return set(self.postconf("-H").split())

    def explicit_settings(self):
        """What main.cf actually sets: `postconf -n`, plus user-defined names it hides.

        `postconf -n` leaves out user-defined names that nothing refers to; without them a
        second run could not see that such a name is already set.
        """
        settings = parse_settings(self.postconf("-n"))
        for name, value in read_main_cf(self.main_cf_path()).items():
            settings.setdefault(name, value)
        return settings

    def master_entries(self):
        """master.cf services keyed 'name/type', with overrides split from the command."""
        fields = {}
        for key, value in parse_settings(self.postconf("-F")).items():
            service_key, field = key.rsplit("/", 1)
            fields.setdefault(service_key, {})[field] = value
        entries = {}
        for service_key, values in fields.items():
            name, service_type = service_key.rsplit("/", 1)
            command, options = split_command(values.get("command", ""))
            entries[service_key] = MasterEntry(
                name=values.get("service", name),
                type=values.get("type", service_type),
                command=command,
                options=options,
                **{ours: values.get(theirs, "-") for ours, theirs in MASTER_FIELDS},
            )
        return entries

    # -- changes ---------------------------------------------------------------

    def edits(self, to_set, to_remove, plan):
        """[(what it changes, postconf arguments)] turning main.cf and master.cf into the planned
        state: all main.cf assignments in one `postconf -e`, all removals in one `-X`, and at most
        one invocation per kind of master.cf edit (a ServicePlan)."""
        edits = []
        if to_set:
            edits.append(("main.cf: set %s" % ", ".join(to_set), ["-e"] + ["%s=%s" % item for item in to_set.items()]))
        if to_remove:
            edits.append(("main.cf: removed %s" % ", ".join(to_remove), ["-X"] + list(to_remove)))
        if plan.remove:
            edits.append(("master.cf: removed %s" % ", ".join(plan.remove), ["-MX"] + list(plan.remove)))
        if plan.replace:
            edits.append(
                (
                    "master.cf: wrote %s" % ", ".join(entry.key for entry in plan.replace),
                    ["-M"] + ["%s=%s" % (entry.key, entry.line()) for entry in plan.replace],
                )
            )
        if plan.fields:
            edits.append(
                (
                    "master.cf: set %s" % ", ".join(plan.fields),
                    ["-F"] + ["%s=%s" % item for item in plan.fields.items()],
                )
            )
        if plan.remove_options:
            edits.append(
                ("master.cf: removed %s" % ", ".join(plan.remove_options), ["-PX"] + list(plan.remove_options))
            )
        if plan.set_options:
            edits.append(
                (
                    "master.cf: set %s" % ", ".join(plan.set_options),
                    ["-P"] + ["%s=%s" % item for item in plan.set_options.items()],
                )
            )
        return edits


def describe(postfix):
    """Facts for the postfix_info module; installed=False instead of an error without Postfix."""
    facts = {
        "installed": find_binary("postconf") is not None,
        "mail_version": None,
        "default_database_type": None,
        "map_types": [],
        "config_directory": None,
        "tls_min_version_syntax": None,
        "relayhost": None,
        "main_cf_exists": False,
        "inet_services": [],
        "unix_services": [],
    }
    if not facts["installed"]:
        return facts
    facts["mail_version"] = postfix.mail_version()
    facts["tls_min_version_syntax"] = tls_min_version_syntax(facts["mail_version"])
    facts["config_directory"] = postfix.config_directory()
    # One postconf call for both: each costs a no-op run ~20 ms on the target.
    facts.update(postfix.values("default_database_type", "relayhost"))
    facts["map_types"] = postfix.map_types()
    facts["main_cf_exists"] = os.path.exists(postfix.main_cf_path())
    services = postfix.services()
    facts["inet_services"] = services.get("inet", [])
    facts["unix_services"] = services.get("unix", [])
    return facts
