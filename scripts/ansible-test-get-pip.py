# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Offline stand-in for the get-pip.py that ansible-test downloads.

ansible-test bootstraps pip into the virtual environments of some sanity
tests by fetching get-pip.py from a host that is unreachable without the
internet. Python's bundled ensurepip gives the same result, after which the
requested packages install from the configured package index as usual.
"""

import ensurepip
import os
import subprocess
import sys

ensurepip.bootstrap(upgrade=True)
# get-pip.py understands these two flags; pip install does not.
args = [arg for arg in sys.argv[1:] if arg not in ("--no-setuptools", "--no-wheel")]
# ansible-test runs this with a trimmed environment, so pip's certificate
# setting can be lost; hand it the system bundle where the index needs it.
bundle = os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt"
if os.path.exists(bundle):
    args = ["--cert", bundle] + args
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", "-q"] + args))
