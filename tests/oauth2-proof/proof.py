# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The oauth2 proof, run as root inside a Debian test container that run.sh prepared.

Postfix (Debian's package) relays through a pipe(8) transport to oauth2-token deliver, which runs
Debian's msmtp with XOAUTH2 against fake_provider.py. Every check below is measured on the real
programs: messages go in with sendmail, outcomes are read from Postfix's log and queue and from
the provider's delivery record. Results are written as JSON; each check passes or fails.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import subprocess
import threading
import time
import urllib.request
import uuid

PROOF = os.path.dirname(os.path.abspath(__file__))
PKI = os.path.join(PROOF, "pki")
SCRIPT = "/usr/libexec/smarthost-postfix/oauth2-token"
CONFIG_DIR = "/etc/smarthost-postfix/oauth2"
CACHE_DIR = "/var/cache/smarthost-postfix/oauth2"
MAILLOG = "/var/log/mail.log"
DELIVERIES = os.path.join(PKI, "deliveries.jsonl")
CONTROL = "http://127.0.0.1:8080"
ACCOUNTS = json.load(open(os.path.join(PROOF, "accounts.json"), encoding="utf-8"))
MS_APP = ACCOUNTS["microsoft"]["apps"][0]
GOOGLE = ACCOUNTS["google"]["clients"][0]
GOOGLE_REFRESH = next(iter(GOOGLE["refresh_tokens"]))
MAILBOX = MS_APP["mailboxes"][0]
GMAIL_ACCOUNT = GOOGLE["refresh_tokens"][GOOGLE_REFRESH]
SECRETS = [MS_APP["client_secret"], GOOGLE["client_secret"], GOOGLE_REFRESH]


class Proof:
    def __init__(self, label):
        self.label = label
        self.checks = []
        self.measurements = {}

    def check(self, name, ok, detail=""):
        self.checks.append({"check": name, "ok": bool(ok), "detail": detail})
        print("%s %s%s" % ("PASS" if ok else "FAIL", name, (": " + detail) if detail else ""), flush=True)
        return ok

    def measure(self, name, value):
        self.measurements[name] = value
        print("  measured %s = %s" % (name, json.dumps(value)), flush=True)


# --- helpers --------------------------------------------------------------------------------------


def run(argv, **kwargs):
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    return subprocess.run(argv, check=False, **kwargs)


def control(path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(CONTROL + path, data=data, method="POST" if data is not None else "GET")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def deliveries():
    with open(DELIVERIES, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def delivered(message_id):
    return [entry for entry in deliveries() if entry.get("message_id") == message_id]


def send(sender, recipients, subject="proof", message_id=None, extra_headers=""):
    message_id = message_id or "<%s@proof.example>" % uuid.uuid4().hex
    body = "From: %s\nTo: %s\nSubject: %s\nMessage-ID: %s\n%s\nProof body.\n" % (
        sender or "MAILER-DAEMON@proof.example",
        ", ".join(recipients),
        subject,
        message_id,
        extra_headers,
    )
    result = run(["/usr/sbin/sendmail", "-f", sender, "--"] + recipients, input=body.encode())
    if result.returncode != 0:
        raise RuntimeError("sendmail failed: %s" % result.stderr.decode())
    return message_id


def maillog():
    try:
        with open(MAILLOG, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return ""


def queue_ids(message_id):
    return re.findall(
        r" ([0-9A-F]{6,}|[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z]{10,}): message-id=%s" % re.escape(message_id), maillog()
    )


def statuses(message_id):
    """[(recipient, status, dsn, text)] of every delivery attempt of the message, in log order."""
    found = []
    for queue_id in queue_ids(message_id):
        for line in maillog().splitlines():
            if " %s: to=<" % queue_id in line and " status=" in line:
                match = re.search(r"to=<([^>]*)>.* dsn=([0-9.]+), status=(\w+) \((.*)\)$", line)
                if match:
                    found.append((match.group(1), match.group(3), match.group(2), match.group(4)))
    return found


def wait_for(predicate, timeout=60, interval=0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


def wait_status(message_id, wanted=("sent", "deferred", "bounced"), count=1, timeout=60):
    return wait_for(
        lambda: (
            [s for s in statuses(message_id) if s[1] in wanted][:count]
            if len([s for s in statuses(message_id) if s[1] in wanted]) >= count
            else None
        ),
        timeout,
    )


def queue_size():
    result = run(["postqueue", "-j"])
    return len([line for line in result.stdout.decode().splitlines() if line.strip()])


def flush():
    run(["postqueue", "-f"])


def empty_queue(timeout=300):
    return wait_for(lambda: queue_size() == 0, timeout, 0.5)


def clear_cache():
    for path in glob.glob(os.path.join(CACHE_DIR, "*.json")):
        os.unlink(path)


def cached(account):
    try:
        with open(os.path.join(CACHE_DIR, account + ".json"), encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}


def fingerprint(token):
    import hashlib

    return hashlib.sha256(token.encode()).hexdigest()[:12]


def as_delivery_user(argv):
    return run(["setpriv", "--reuid=smarthost-oauth2", "--regid=smarthost-oauth2", "--clear-groups", "--"] + argv)


# --- scenarios ------------------------------------------------------------------------------------


def scenario_a(proof):
    """(a) sendmail -> Postfix -> pipe -> msmtp XOAUTH2 over verified TLS, as the mailbox."""
    control("/control", {"token": "ok", "smtp": "ok", "lifetime": 3599})
    clear_cache()
    message_id = send(MAILBOX, ["someone@example.org"], "a: office365")
    status = wait_status(message_id)
    got = delivered(message_id)
    proof.check("a office365: status=sent", status and status[0][1] == "sent", str(status))
    proof.check(
        "a office365: arrived once, XOAUTH2 as the mailbox, TLS 1.2+",
        len(got) == 1
        and got[0]["auth_mechanism"] == "XOAUTH2"
        and got[0]["auth_user"] == MAILBOX
        and got[0]["tls_version"] in ("TLSv1.2", "TLSv1.3")
        and got[0]["server"] == "office365"
        and got[0]["mail_from"] == MAILBOX
        and got[0]["rcpt_tos"] == ["someone@example.org"],
        json.dumps(got),
    )
    proof.measure("a_office365_log_line", status[0][3] if status else None)

    message_id = send(GMAIL_ACCOUNT, ["friend@gmail-route.example"], "a: gmail")
    status = wait_status(message_id)
    got = delivered(message_id)
    proof.check("a gmail route: status=sent", status and status[0][1] == "sent", str(status))
    proof.check(
        "a gmail route: XOAUTH2 as the account over TLS",
        len(got) == 1
        and got[0]["server"] == "gmail"
        and got[0]["auth_user"] == GMAIL_ACCOUNT
        and got[0]["tls_version"] in ("TLSv1.2", "TLSv1.3"),
        json.dumps(got),
    )

    message_id = send("", ["someone@example.org"], "a: null sender")
    status = wait_status(message_id)
    got = delivered(message_id)
    proof.check(
        "a null sender: MAIL FROM:<> reaches the provider",
        status and status[0][1] == "sent" and len(got) == 1 and got[0]["mail_from"] == "",
        json.dumps(got),
    )

    # Negative control: with a CA that did not sign the server's certificate nothing is sent.
    rogue = os.path.join(CONFIG_DIR, "office365.json")
    with open(rogue, encoding="utf-8") as handle:
        original = handle.read()
    data = json.loads(original)
    data["ca_file"] = os.path.join(PKI, "rogue-ca.crt")
    write_config("office365", data)
    message_id = send(MAILBOX, ["someone@example.org"], "a: untrusted certificate")
    status = wait_status(message_id, ("sent", "deferred", "bounced"))
    proof.check(
        "a untrusted SMTP certificate: deferred, nothing delivered",
        status
        and status[0][1] == "deferred"
        and "smtp_certificate_untrusted" in status[0][3]
        and not delivered(message_id),
        str(status),
    )
    with open(rogue, "w", encoding="utf-8") as handle:
        handle.write(original)
    flush()
    status = wait_status(message_id, ("sent",))
    proof.check(
        "a untrusted certificate: delivered once the CA is right again", status and len(delivered(message_id)) == 1
    )


def write_config(account, data):
    path = os.path.join(CONFIG_DIR, account + ".json")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2)
    os.chmod(path, 0o640)
    os.chown(path, 0, _gid("smarthost-oauth2"))


def _gid(group):
    import grp

    return grp.getgrnam(group).gr_gid


def scenario_b(proof):
    """(b) 20-second tokens: mail after expiry leaves with a fresh token, no restart, no converge."""
    control("/control", {"token": "ok", "smtp": "ok", "lifetime": 20})
    clear_cache()
    first = send(MAILBOX, ["b1@example.org"], "b: first")
    wait_status(first, ("sent",))
    first_token = delivered(first)[0]["token"] if delivered(first) else None
    pid_before = run(["pidof", "master"]).stdout.decode().strip()
    time.sleep(25)
    second = send(MAILBOX, ["b2@example.org"], "b: after expiry")
    status = wait_status(second, ("sent", "deferred", "bounced"))
    second_token = delivered(second)[0]["token"] if delivered(second) else None
    pid_after = run(["pidof", "master"]).stdout.decode().strip()
    proof.check("b first message sent with token T1", first_token is not None, str(first_token))
    proof.check(
        "b message 25 s later (token lifetime 20 s) sent at once with a new token, Postfix not restarted",
        status and status[0][1] == "sent" and second_token not in (None, first_token) and pid_before == pid_after,
        "status=%s T1=%s T2=%s master %s/%s" % (status, first_token, second_token, pid_before, pid_after),
    )
    # Within the refresh margin (half of 20 s) the cached token is reused, not refetched.
    before = control("/state")["counters"]["tokens_issued"]
    third = send(MAILBOX, ["b3@example.org"], "b: reuse")
    wait_status(third, ("sent",))
    after = control("/state")["counters"]["tokens_issued"]
    proof.check(
        "b a message right after reuses the cached token",
        after == before and delivered(third) and delivered(third)[0]["token"] == second_token,
        "issued %d -> %d" % (before, after),
    )
    control("/control", {"lifetime": 3599})


def scenario_c(proof):
    """(c) token endpoint down, slow or failing -> deferred (never bounced) -> delivered after recovery."""
    results = {}
    for mode in ("down", "slow", "http503"):
        clear_cache()
        control("/control", {"token": mode, "slow_seconds": 30})
        started = time.time()
        message_id = send(MAILBOX, ["c-%s@example.org" % mode], "c: token endpoint %s" % mode)
        status = wait_status(message_id, ("sent", "deferred", "bounced"), timeout=90)
        elapsed = round(time.time() - started, 1)
        results[mode] = {
            "status": status[0][1] if status else None,
            "text": status[0][3] if status else None,
            "seconds_to_defer": elapsed,
        }
        proof.check(
            "c token endpoint %s: status=deferred, not bounced" % mode,
            status and status[0][1] == "deferred" and not delivered(message_id),
            str(status),
        )
        control("/control", {"token": "ok"})
        time.sleep(11)  # failure_hold (10 s) so the retry asks the endpoint again
        flush()
        sent = wait_status(message_id, ("sent",), timeout=60)
        proof.check(
            "c token endpoint %s: delivered once after it returns (postqueue -f)" % mode,
            sent and len(delivered(message_id)) == 1,
            str(sent),
        )
    proof.measure("c_deferrals", results)


def send_many(count, prefix):
    ids = []
    for index in range(count):
        ids.append(send(MAILBOX, ["%s-%03d@example.org" % (prefix, index)], "%s %d" % (prefix, index)))
    return ids


def watch_processes(stop, samples):
    """Sample every process's argv and environment (and ps's view) while deliveries run."""
    rounds = 0
    while not stop.is_set():
        rounds += 1
        if rounds % 10 == 0:
            samples.append(run(["ps", "-eww", "-o", "user,pid,args"]).stdout)
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            for name in ("cmdline", "environ"):
                try:
                    with open("/proc/%s/%s" % (pid, name), "rb") as handle:
                        samples.append(handle.read().replace(b"\0", b" "))
                except OSError:
                    pass
        time.sleep(0.05)


def scenario_d(proof, samples):
    """(d) 200 messages during an identity provider outage: valid cached token, then an expired one."""
    control("/control", {"token": "ok", "smtp": "ok", "lifetime": 3599})
    clear_cache()
    as_delivery_user([SCRIPT, "renew", "--config", os.path.join(CONFIG_DIR, "office365.json"), "--force"])
    control("/control", {"token": "down"})
    stop = threading.Event()
    watcher = threading.Thread(target=watch_processes, args=(stop, samples), daemon=True)
    watcher.start()
    started = time.time()
    ids = send_many(200, "d-valid")
    empty_queue(600)
    elapsed = time.time() - started
    stop.set()
    watcher.join()
    got = [delivered(message_id) for message_id in ids]
    proof.check(
        "d outage with a valid cached token: 200 of 200 delivered, each exactly once",
        all(len(entry) == 1 for entry in got),
        "delivered %d, duplicates %d" % (sum(1 for entry in got if entry), sum(1 for entry in got if len(entry) > 1)),
    )
    proof.measure("d_valid_token_200_seconds", round(elapsed, 1))
    proof.measure("d_valid_token_messages_per_second", round(200 / elapsed, 1))

    # The cached token runs out: renew a 30 s token, take the endpoint down, wait past its last-resort margin.
    control("/control", {"token": "ok", "lifetime": 30})
    as_delivery_user([SCRIPT, "renew", "--config", os.path.join(CONFIG_DIR, "office365.json"), "--force"])
    control("/control", {"token": "down", "lifetime": 3599})
    time.sleep(24)
    ids = send_many(200, "d-expired")
    wait_for(lambda: all(statuses(message_id) for message_id in ids), 300, 1)
    outcomes = [statuses(message_id) for message_id in ids]
    deferred = sum(1 for entry in outcomes if entry and all(s[1] == "deferred" for s in entry))
    bounced = sum(1 for entry in outcomes if any(s[1] == "bounced" for s in entry))
    proof.check(
        "d outage with an expired token: 200 of 200 deferred, none bounced, none delivered",
        deferred == 200 and bounced == 0 and not any(delivered(m) for m in ids),
        "deferred %d bounced %d queue %d" % (deferred, bounced, queue_size()),
    )
    texts = sorted(set(re.sub(r"\d+ s ago", "N s ago", s[3]) for entry in outcomes for s in entry))
    proof.measure("d_expired_deferral_texts", texts[:5])
    before = control("/state")["counters"]["token_requests"]
    control("/control", {"token": "ok"})
    time.sleep(11)
    started = time.time()
    flush()
    empty_queue(600)
    elapsed = time.time() - started
    got = [delivered(message_id) for message_id in ids]
    requests = control("/state")["counters"]["token_requests"] - before
    proof.check(
        "d after recovery: 200 of 200 delivered, each exactly once",
        all(len(entry) == 1 for entry in got),
        "delivered %d, duplicates %d" % (sum(1 for entry in got if entry), sum(1 for entry in got if len(entry) > 1)),
    )
    proof.check(
        "d after recovery: the concurrent deliveries fetched one token, not one each",
        requests == 1,
        "%d token requests" % requests,
    )
    proof.measure("d_recovery_200_seconds", round(elapsed, 1))


def scenario_throughput(proof):
    """Not a benchmark: how long 100 messages take through the transport (maxproc 3) on this machine."""
    control("/control", {"token": "ok", "smtp": "ok", "lifetime": 3599})
    as_delivery_user([SCRIPT, "renew", "--config", os.path.join(CONFIG_DIR, "office365.json"), "--force"])
    started = time.time()
    ids = send_many(100, "rate")
    empty_queue(600)
    elapsed = time.time() - started
    proof.check("throughput run: 100 of 100 delivered once", all(len(delivered(m)) == 1 for m in ids))
    proof.measure("throughput_100_messages_seconds", round(elapsed, 1))
    proof.measure("throughput_messages_per_second", round(100 / elapsed, 1))
    load = open("/proc/loadavg").read().split()[:3]
    proof.measure("throughput_load_average", load)


def scenario_e(proof):
    """(e) the provider's refusals: 535 and quotas deferred, a refused recipient bounced."""
    control("/control", {"token": "ok", "smtp": "ok", "lifetime": 3599})
    cases = [
        ("auth535", MAILBOX, ["e-auth@example.org"], "deferred", "xoauth2_rejected", "535 5.7.3"),
        (
            "quota",
            MAILBOX,
            ["e-quota@example.org"],
            "deferred",
            "sending_quota_exceeded",
            "5.4.5 Daily user sending limit",
        ),
        (
            "ms_quota",
            MAILBOX,
            ["e-msquota@example.org"],
            "deferred",
            "sending_quota_exceeded",
            "SubmissionQuotaExceeded",
        ),
        ("mail432", MAILBOX, ["e-432@example.org"], "deferred", "provider_temporary", "432 4.3.2"),
        ("data451", MAILBOX, ["e-451@example.org"], "deferred", "provider_temporary", "451 4.7.500"),
    ]
    texts = {}
    for mode, sender, recipients, expected, cause, reply in cases:
        control("/control", {"smtp": mode})
        message_id = send(sender, recipients, "e: %s" % mode)
        status = wait_status(message_id)
        texts[mode] = status[0][2:] if status else None
        proof.check(
            "e %s: status=%s with cause %s and the reply verbatim" % (mode, expected, cause),
            status and status[0][1] == expected and cause in status[0][3] and reply in status[0][3],
            str(status),
        )
        control("/control", {"smtp": "ok"})
        flush()
        sent = wait_status(message_id, ("sent",))
        proof.check("e %s: delivered once the provider accepts again" % mode, sent and len(delivered(message_id)) == 1)
    permanent = [
        ("recipient refused 550 5.7.1", MAILBOX, ["refused-e@example.org"], "5.7.1", "RESOLVER.RST.NotAuthorized"),
        ("SendAsDenied 554 5.2.252", "someone-else@contoso.com", ["e-sendas@example.org"], "5.2.252", "SendAsDenied"),
        ("quoted local part", MAILBOX, ['"john doe"@example.org'], "5.1.3", "recipient_syntax_unsupported"),
    ]
    for name, sender, recipients, dsn, reply in permanent:
        message_id = send(sender, recipients, "e: %s" % name)
        status = wait_status(message_id)
        texts[name] = status[0][2:] if status else None
        proof.check(
            "e %s: status=bounced with dsn %s" % (name, dsn),
            status and status[0][1] == "bounced" and status[0][2] == dsn and reply in status[0][3],
            str(status),
        )
    # One refused recipient does not take the others with it (recipient limit 1).
    message_id = send(MAILBOX, ["good-e@example.org", "refused-e2@example.org"], "e: mixed recipients")
    status = wait_status(message_id, count=2)
    outcome = dict((s[0], s[1]) for s in status or [])
    proof.check(
        "e mixed recipients: the good one sent, the refused one bounced",
        outcome == {"good-e@example.org": "sent", "refused-e2@example.org": "bounced"},
        str(status),
    )
    # The bounce for the refused recipient goes back to the sender with the null sender, through the relay.
    bounce = wait_for(
        lambda: [
            d
            for d in deliveries()
            if d["mail_from"] == "" and d["rcpt_tos"] == [MAILBOX] and "Undelivered" in (d.get("subject") or "")
        ],
        60,
    )
    proof.check("e the bounce leaves through the relay with MAIL FROM:<>", bool(bounce), str(len(bounce or [])))
    proof.measure("e_log_texts", texts)


def scenario_renewal_timer(proof):
    """The systemd service renews as the delivery user once the token is past half its lifetime."""
    control("/control", {"token": "ok", "lifetime": 20})
    clear_cache()
    as_delivery_user([SCRIPT, "renew", "--config", os.path.join(CONFIG_DIR, "office365.json"), "--force"])
    before = cached("office365").get("token", {}).get("access_token")
    result = run(["systemctl", "start", "smarthost-oauth2-renew@office365.service"])
    not_due = cached("office365").get("token", {}).get("access_token")
    time.sleep(11)
    result = run(["systemctl", "start", "smarthost-oauth2-renew@office365.service"])
    after = cached("office365").get("token", {}).get("access_token")
    journal = run(
        ["journalctl", "-u", "smarthost-oauth2-renew@office365.service", "-o", "cat", "--no-pager"]
    ).stdout.decode()
    info = os.stat(os.path.join(CACHE_DIR, "office365.json"))
    import pwd

    proof.check(
        "timer service: not due before half-life, renewed after it, as smarthost-oauth2, cache 0600",
        result.returncode == 0
        and before == not_due
        and after not in (None, before)
        and pwd.getpwuid(info.st_uid).pw_name == "smarthost-oauth2"
        and oct(info.st_mode & 0o777) == "0o600",
        journal.strip().splitlines()[-4:].__repr__(),
    )
    control("/control", {"token": "down"})
    time.sleep(11)
    result = run(["systemctl", "start", "smarthost-oauth2-renew@office365.service"])
    state = run(["systemctl", "is-failed", "smarthost-oauth2-renew@office365.service"]).stdout.decode().strip()
    journal = run(
        ["journalctl", "-u", "smarthost-oauth2-renew@office365.service", "-o", "cat", "--no-pager"]
    ).stdout.decode()
    proof.check(
        "timer service: a failed renewal fails the unit with the cause in the journal",
        result.returncode != 0 and state == "failed" and "token_endpoint_unreachable" in journal,
        [line for line in journal.splitlines() if "renew failed" in line][-1:].__repr__(),
    )
    run(["systemctl", "reset-failed", "smarthost-oauth2-renew@office365.service"])
    timer = run(["systemctl", "is-active", "smarthost-oauth2-renew@office365.timer"]).stdout.decode().strip()
    proof.check("timer is active", timer == "active", timer)
    control("/control", {"token": "ok", "lifetime": 3599})


def scenario_f(proof, samples):
    """(f) no secret or token in process lists, the journal, the mail log or any file others can read."""
    issued = control("/issued")
    needles = [value.encode() for value in SECRETS + issued]
    proof.measure("f_process_samples", len(samples))
    proof.measure("f_tokens_issued_checked", len(issued))
    leaked = [needle[:8] for needle in needles if any(needle in sample for sample in samples)]
    proof.check(
        "f no secret or token in any sampled argv or environment during 200 deliveries", not leaked, str(leaked)
    )
    journal = run(["journalctl", "-o", "verbose", "--no-pager"]).stdout
    log = maillog().encode()
    proof.check("f no secret or token in the journal", not [n for n in needles if n in journal])
    proof.check("f no secret or token in the mail log", not [n for n in needles if n in log])
    readable = []
    for root, dirs, files in os.walk("/"):
        if root.startswith(("/proc", "/sys", "/dev", "/run/credentials", PROOF)):
            dirs[:] = []
            continue
        for name in files:
            path = os.path.join(root, name)
            try:
                info = os.lstat(path)
                if not (info.st_mode & 0o004) or not os.path.isfile(path) or info.st_size > 50 * 1024 * 1024:
                    continue
                with open(path, "rb") as handle:
                    content = handle.read()
            except OSError:
                continue
            if any(needle in content for needle in needles):
                readable.append(path)
    proof.check("f no secret or token in any world-readable file", not readable, str(readable[:5]))
    modes = {}
    for path in glob.glob(CONFIG_DIR + "/*") + glob.glob(CACHE_DIR + "/*") + [CONFIG_DIR, CACHE_DIR]:
        info = os.stat(path)
        import grp
        import pwd

        modes[path] = "%s:%s %04o" % (
            pwd.getpwuid(info.st_uid).pw_name,
            grp.getgrgid(info.st_gid).gr_name,
            info.st_mode & 0o7777,
        )
    proof.measure("f_file_modes", modes)
    proof.check(
        "f secrets and tokens only in files private to root and smarthost-oauth2",
        all(mode.endswith(("0600", "0640", "0700", "0750")) for mode in modes.values()),
        json.dumps(modes),
    )


MSMTP_CASES = [
    # (name, smtp mode, host, port, trust, passwordeval, sender, recipient)
    ("sent", "ok", "smtp.office365.com", 587, "ca.crt", "token", MAILBOX, "g@example.org"),
    ("535 5.7.3 after a token", "auth535", "smtp.office365.com", 587, "ca.crt", "token", MAILBOX, "g@example.org"),
    ("gmail 334 then 535-5.7.8", "ok", "smtp.gmail.com", 587, "ca.crt", "token", GMAIL_ACCOUNT, "g@example.org"),
    ("550 5.4.5 at MAIL", "quota", "smtp.gmail.com", 587, "ca.crt", "gtoken", GMAIL_ACCOUNT, "g@example.org"),
    ("432 4.3.2 at MAIL", "mail432", "smtp.office365.com", 587, "ca.crt", "token", MAILBOX, "g@example.org"),
    ("550 5.7.1 at RCPT", "ok", "smtp.office365.com", 587, "ca.crt", "token", MAILBOX, "refused@example.org"),
    ("451 4.7.500 at DATA", "data451", "smtp.office365.com", 587, "ca.crt", "token", MAILBOX, "g@example.org"),
    ("554 5.2.252 at DATA", "ok", "smtp.office365.com", 587, "ca.crt", "token", "other@contoso.com", "g@example.org"),
    ("554 5.2.0 quota at DATA", "ms_quota", "smtp.office365.com", 587, "ca.crt", "token", MAILBOX, "g@example.org"),
    ("passwordeval fails", "ok", "smtp.office365.com", 587, "ca.crt", "false", MAILBOX, "g@example.org"),
    ("connection refused", "ok", "smtp.office365.com", 25, "ca.crt", "token", MAILBOX, "g@example.org"),
    ("untrusted certificate", "ok", "smtp.office365.com", 587, "rogue-ca.crt", "token", MAILBOX, "g@example.org"),
    ("name mismatch", "ok", "127.0.0.2", 587, "ca.crt", "token", MAILBOX, "g@example.org"),
    ("unknown host", "ok", "no-such-host.invalid", 587, "ca.crt", "token", MAILBOX, "g@example.org"),
    ("silent server (timeout)", "ok", "127.0.0.9", 587, "ca.crt", "token", MAILBOX, "g@example.org"),
    ("no STARTTLS offered", "ok", "127.0.0.9", 2525, "ca.crt", "token", MAILBOX, "g@example.org"),
    ("missing trust file", "ok", "smtp.office365.com", 587, "missing.crt", "token", MAILBOX, "g@example.org"),
]


def scenario_g(proof):
    """(g) msmtp's own exit codes and texts for each failure, and what deliver makes of them."""
    import socket

    silent = socket.socket()
    silent.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    silent.bind(("127.0.0.9", 587))
    silent.listen(5)
    plain = threading.Thread(target=_plain_smtp, daemon=True)
    plain.start()
    tokens = {}
    for account, config in (("token", "office365"), ("gtoken", "gmail")):
        tokens[account] = (
            as_delivery_user([SCRIPT, "token", "--config", os.path.join(CONFIG_DIR, config + ".json")])
            .stdout.decode()
            .strip()
        )
    for name in ("token", "gtoken"):
        descriptor = os.open("/tmp/proof-%s" % name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(tokens[name])
    import importlib.machinery
    import importlib.util

    loader = importlib.machinery.SourceFileLoader("oauth2_token", SCRIPT)  # no .py suffix: name the loader
    spec = importlib.util.spec_from_loader("oauth2_token", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    table = []
    for name, mode, host, port, trust, password, sender, recipient in MSMTP_CASES:
        control("/control", {"smtp": mode})
        user = GMAIL_ACCOUNT if host == "smtp.gmail.com" else MAILBOX
        command = {"token": "cat /tmp/proof-token", "gtoken": "cat /tmp/proof-gtoken", "false": "false"}[password]
        rc = (
            "account default\nhost %s\nport %d\ntls on\ntls_starttls on\ntls_trust_file %s\nauth xoauth2\nuser %s\n"
            'passwordeval "%s"\ndomain relay.proof.example\ntimeout 5\nlogfile -\nsyslog off\n'
            % (host, port, os.path.join(PKI, trust), user, command)
        )
        with open("/tmp/proof-msmtprc", "w") as handle:
            handle.write(rc)
        os.chmod("/tmp/proof-msmtprc", 0o600)
        result = run(
            ["msmtp", "--file=/tmp/proof-msmtprc", "-f", sender, "--", recipient],
            input=b"Subject: g\n\nbody\n",
            env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"},
        )
        stderr = result.stderr.decode()
        outcome = module.classify_msmtp(result.returncode, stderr, result.stdout.decode().strip())
        table.append(
            {
                "case": name,
                "msmtp_version": run(["msmtp", "--version"]).stdout.decode().split()[2],
                "msmtp_exit": result.returncode,
                "msmtp_stderr": stderr.strip().splitlines(),
                "msmtp_stdout": result.stdout.decode().strip(),
                "deliver_exit": outcome.status,
                "deliver_line": outcome.line(),
            }
        )
    control("/control", {"smtp": "ok"})
    silent.close()
    proof.measure("g_msmtp_table", table)
    expected_permanent = {"550 5.7.1 at RCPT", "554 5.2.252 at DATA"}
    wrong = [
        row["case"]
        for row in table
        if row["case"] != "sent" and (row["deliver_exit"] == 75) == (row["case"] in expected_permanent)
    ]
    proof.check("g every msmtp failure maps to 75 except the two permanent refusals", not wrong, str(wrong))
    with open(os.path.join(PROOF, "results", "msmtp-%s.json" % proof.label), "w") as handle:
        json.dump(table, handle, indent=2)


def _plain_smtp():
    """A server on 127.0.0.9:2525 that offers no STARTTLS (a stripping middlebox)."""
    import socket

    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.9", 2525))
    server.listen(5)
    while True:
        connection = server.accept()[0]
        stream = connection.makefile("rwb")
        stream.write(b"220 plain ESMTP\r\n")
        stream.flush()
        for line in stream:
            if line.upper().startswith(b"EHLO"):
                stream.write(b"250-plain\r\n250 AUTH XOAUTH2\r\n")
            elif line.upper().startswith(b"QUIT"):
                stream.write(b"221 bye\r\n")
                stream.flush()
                break
            else:
                stream.write(b"502 no\r\n")
            stream.flush()
        connection.close()


def scenario_versions(proof):
    versions = {}
    for package in ("postfix", "msmtp", "python3", "python3-aiosmtpd"):
        versions[package] = run(["dpkg-query", "-W", "-f=${Version}", package]).stdout.decode()
    versions["os"] = open("/etc/debian_version").read().strip()
    proof.measure("versions", versions)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--label", required=True)
    parser.add_argument("--only", nargs="*")
    args = parser.parse_args()
    os.makedirs(os.path.join(PROOF, "results"), exist_ok=True)
    proof = Proof(args.label)
    samples = []
    scenarios = [
        ("versions", lambda: scenario_versions(proof)),
        ("g", lambda: scenario_g(proof)),
        ("a", lambda: scenario_a(proof)),
        ("b", lambda: scenario_b(proof)),
        ("c", lambda: scenario_c(proof)),
        ("d", lambda: scenario_d(proof, samples)),
        ("throughput", lambda: scenario_throughput(proof)),
        ("e", lambda: scenario_e(proof)),
        ("timer", lambda: scenario_renewal_timer(proof)),
        ("f", lambda: scenario_f(proof, samples)),
    ]
    started = time.time()
    for name, function in scenarios:
        if args.only and name not in args.only and name != "versions":
            continue
        try:
            function()
        except Exception as error:  # a crashed scenario is a failed check, and the others still run
            proof.check("scenario %s completed" % name, False, "%s: %s" % (type(error).__name__, error))
    proof.measure("total_seconds", round(time.time() - started))
    with open(os.path.join(PROOF, "results", "proof-%s.json" % args.label), "w") as handle:
        json.dump({"label": args.label, "checks": proof.checks, "measurements": proof.measurements}, handle, indent=2)
    failed = [check for check in proof.checks if not check["ok"]]
    print("%d checks, %d failed" % (len(proof.checks), len(failed)))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
