# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Pacing a relay at a provider's rate with whole-second rate delays (issue 15, part 1).

Postfix paces one (transport, next hop) queue with `<transport>_destination_rate_delay`, in whole
seconds, one delivery at a time. The queue manager's timers are whole seconds too
(`when = time() + delay`), so a paced queue resumes at the next whole-second tick, and every paced
queue that is due resumes at the same tick. To reach N messages a second the relay needs several
clones of the smtp transport, each a queue of its own, chosen per message at random
(`randmap:`, Postfix 3.0+) through `sender_dependent_default_transport_maps`, which keeps the next
hop from `relayhost` or `sender_dependent_relayhost_maps` and leaves `transport_maps` routes alone.

    design(rate)        the clone delays for a rate: whole seconds, sum of 1/delay <= rate
    settings(...)       the main.cf parameters and master.cf lines for a design
    apply(...)          write them on a bench host (the role does not emit them yet)

The plan (plugins/plugin_utils/relay_plan/) is expected to emit the same entries; until it does, the
benchmark writes them itself on a host the role converged unpaced.
"""

from __future__ import annotations

import fractions
import math

# Under a backlog a paced relay must reach this share of the rate it was given.
FLOOR = fractions.Fraction(9, 10)
CLONE_PREFIX = "smtp"


def _fraction(rate):
    """The rate as an exact fraction (a float's repr, so 3.5 is 7/2 and 0.023 is 23/1000)."""
    value = fractions.Fraction(repr(rate)) if isinstance(rate, float) else fractions.Fraction(rate)
    if value <= 0:
        raise ValueError("a pacing rate must be positive, got %r" % (rate,))
    return value


def design(rate, floor=FLOOR):
    """Delays in whole seconds of the clones that pace `rate` messages a second.

    One clone per whole message a second at a 1 s delay (they all fire at the same tick, so a
    provider sees at most that many in any second), then the fraction that is left greedily: each
    further clone at the shortest whole-second delay that does not overshoot what is left
    (delay = ceil(1 / left)), until the clones reach `floor` of the rate. The sum of 1/delay never
    exceeds the rate. Examples: 14 -> 14 x 1 s; 3.5 -> 3 x 1 s + 1 x 2 s; 0.5 -> 1 x 2 s;
    0.023 -> 1 x 44 s (0.0227/s); 1.9 -> 1 s, 2 s, 3 s (1.83/s).
    """
    target = _fraction(rate)
    delays = [1] * int(target)
    total = fractions.Fraction(len(delays))
    while total < floor * target:
        left = target - total
        delay = math.ceil(1 / left)
        delays.append(delay)
        total += fractions.Fraction(1, delay)
    return delays


def uniform_design(rate, floor=FLOOR):
    """The first idea in issue 15 for comparison: K clones at one delay D, the smallest D with
    floor(rate * D) / D >= floor * rate. 3.5 -> 7 x 2 s, which the benchmark shows fire together."""
    target = _fraction(rate)
    delay = 1
    while True:
        count = int(target * delay)
        if count >= 1 and fractions.Fraction(count, delay) >= floor * target:
            return [delay] * count
        delay += 1


def rate_of(delays):
    return float(sum(fractions.Fraction(1, delay) for delay in delays))


def weights(delays):
    """randmap entries per clone in proportion to its speed (1/delay), smallest whole numbers."""
    common = 1
    for delay in delays:
        common = common * delay // math.gcd(common, delay)
    counts = [common // delay for delay in delays]
    divisor = 0
    for count in counts:
        divisor = math.gcd(divisor, count)
    return [count // divisor for count in counts]


def settings(delays, recipient_limit=None, chroot="y", log_per_clone=True):
    """(main.cf parameters, master.cf lines) for the clones `smtp1..smtpK`.

    Per-transport queue manager settings live in main.cf (the queue manager does not read other
    services' -o options): the delay, the recipient limit the preset gives the smtp transport, and
    a failed-cohort limit of 10 (postconf(5): with a rate delay, one failed connection would
    otherwise throttle the whole destination). `syslog_name` makes each clone's log lines show
    which clone delivered (postfix/smtp3/smtp[pid]).
    """
    names = ["%s%d" % (CLONE_PREFIX, index) for index in range(1, len(delays) + 1)]
    main_cf = {}
    master_cf = []
    for name, delay in zip(names, delays):
        main_cf["%s_destination_rate_delay" % name] = "%ds" % delay
        main_cf["%s_destination_concurrency_failed_cohort_limit" % name] = "10"
        if recipient_limit:
            main_cf["%s_destination_recipient_limit" % name] = str(recipient_limit)
        options = " -o syslog_name=postfix/%s" % name if log_per_clone else ""
        master_cf.append("%s unix - - %s - - smtp%s" % (name, chroot, options))
    entries = []
    for name, weight in zip(names, weights(delays)):
        entries.extend([name] * weight)
    main_cf["sender_dependent_default_transport_maps"] = "randmap:{%s}" % ", ".join(entries)
    return main_cf, master_cf


def describe(delays):
    """'3 x 1 s + 1 x 2 s'"""
    parts = []
    for delay in sorted(set(delays)):
        parts.append("%d x %d s" % (delays.count(delay), delay))
    return " + ".join(parts)
