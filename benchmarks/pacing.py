# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Pacing a relay at a provider's rate with whole-second rate delays (issue 15, part 1).

Postfix paces one (transport, next hop) queue with `<transport>_destination_rate_delay`, in whole
seconds, one delivery at a time. The queue manager's timers are whole seconds too
(`when = time() + delay`), so a paced queue resumes at the next whole-second tick, and every paced
queue that is due resumes at the same tick. To reach N messages a second the relay needs several
clones of the smtp transport, each a queue of its own, chosen per message through
`sender_dependent_default_transport_maps`, which keeps the next hop from `relayhost` or
`sender_dependent_relayhost_maps` and leaves `transport_maps` routes alone. The role takes them in
turn from its pace map (a socketmap server); Postfix alone can pick them at random (`randmap:`).

The design is the plan's (plugins/plugin_utils/relay_plan/limits.py), and the benchmark measures it
as the role converges it. What is here writes designs the role refuses or does not ship, and the
role's clones picked by randmap, for comparison:

    design(rate)        the plan's clone delays for a rate, as a list
    uniform_design(...) K clones at one delay, the first idea in issue 15
    settings(...)       main.cf parameters and master.cf lines for any design and randmap, by hand
    clone_names(...)    the clones, each as often as its weight (randmap's entries)
"""

from __future__ import annotations

import fractions
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".build", "collections"))
# pylint: disable-next=wrong-import-position
from ansible_collections.smarthost.postfix.plugins.plugin_utils.relay_plan import limits  # noqa: E402

# Under a backlog a paced relay must reach this share of the rate it was given.
FLOOR = fractions.Fraction(9, 10)
CLONE_PREFIX = "smtp"


def _fraction(rate):
    """The rate as an exact fraction (a float's repr, so 3.5 is 7/2 and 0.023 is 23/1000)."""
    value = fractions.Fraction(repr(rate)) if isinstance(rate, float) else fractions.Fraction(rate)
    if value <= 0:
        raise ValueError("a pacing rate must be positive, got %r" % (rate,))
    return value


def design(rate):
    """The plan's clone delays for `rate` (14 -> 14 x 1 s; 3.5 -> 3 x 1 s + 1 x 2 s; 0.5 -> 1 x 2 s)."""
    _fraction(rate)
    return list(limits.pacing_design(rate))


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
    """randmap entries per clone in proportion to its speed (1/delay): the plan's rule."""
    return list(limits.pacing_weights(delays))


def clone_names(delays):
    """The clones `smtp1..smtpK`, each as often as its weight: randmap's entries."""
    names = []
    for index, weight in enumerate(weights(delays), start=1):
        names.extend(["%s%d" % (CLONE_PREFIX, index)] * weight)
    return names


def settings(delays, recipient_limit=None, chroot="y", log_per_clone=True):
    """(main.cf parameters, master.cf lines) for the clones `smtp1..smtpK`, picked by randmap.

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
    main_cf["sender_dependent_default_transport_maps"] = "randmap:{%s}" % ", ".join(clone_names(delays))
    return main_cf, master_cf


def describe(delays):
    """'3 x 1 s + 1 x 2 s'"""
    parts = []
    for delay in sorted(set(delays)):
        parts.append("%d x %d s" % (delays.count(delay), delay))
    return " + ".join(parts)
