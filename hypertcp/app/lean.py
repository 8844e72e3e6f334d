"""
pyOpenSSL kept out of a server whose configuration speaks no TLS.

Twisted's TCP support imports pyOpenSSL the first time it is imported (for
C{startTLS}), and pyOpenSSL imports cryptography, service_identity, idna
and bcrypt: 13 MB of the 51 MB a plain server had at start-up.  Twisted
supports running without pyOpenSSL (it then offers no TLS), so before
anything imports that support, a process whose configuration names no TLS
marks pyOpenSSL as missing.  This must run before Twisted's TCP module is
first imported; afterwards it does nothing.
"""

from __future__ import annotations

import sys
from typing import Mapping

#: The keys of the features that need pyOpenSSL, each named here when it is
#: added: TLS listeners and their certificate, the balancer (its listeners
#: and its nodes may speak TLS), the cluster (its Redis client, txredisapi,
#: imports Twisted's TLS module whether or not the URL is rediss://) and
#: the web service (it imports Twisted's TLS wrapper for its HTTPS
#: listeners).  An endpoint of type ssl: anywhere counts too.
TLS_KEYS = (("tls", "listen"), ("tls", "certificate"), ("balancer", "listen"),
            ("cluster", "redis"), ("web", "listen"))


def wants_tls(raw: Mapping[tuple[str, str], str]) -> bool:
    """Does the configuration read by L{hypertcp.app.config.read} need pyOpenSSL?"""
    if any(raw.get(key, "").strip() for key in TLS_KEYS):
        return True
    return any(word.lower().startswith("ssl:") for value in raw.values()
               for word in value.split())


def leave_out_tls() -> bool:
    """
    Make pyOpenSSL unimportable in this process, as if it were not
    installed; False (and nothing done) if Twisted's TCP support or
    pyOpenSSL is already imported.
    """
    if "twisted.internet.tcp" in sys.modules or "OpenSSL" in sys.modules:
        return False
    sys.modules["OpenSSL"] = None  # type: ignore[assignment]
    return True

