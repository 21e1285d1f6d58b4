"""Credentials kept out of whatever tuner records (MLflow tags, artifacts, reports) or prints.

Imports nothing heavy: tracking (which must not import Ray) and the CLI's printers use it.
"""

from __future__ import annotations

import re

MASK = "***"  # what stands for a credential in whatever tuner records or prints
SECRET_WORDS = re.compile(r"secret|token|passw|credential|api_?key|access_?key|auth", re.IGNORECASE)
# The secret part of a URI's userinfo: the password of ``user:password@``, or the whole of a
# user-less ``token@`` (services take a bare token there, e.g. https://TOKEN@host).
_URI_SECRET = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://(?:[^:@/\s]*:)?)[^@/\s]+@", re.I)
# ``key: value`` (YAML) or ``key=value`` (--set) whose key names a secret; nested keys allowed.
_SECRET_LINE = re.compile(
    rf"^(?P<key>[ \t]*(?:-[ \t]+)?[\w.-]*(?:{SECRET_WORDS.pattern})[\w.-]*[ \t]*[:=][ \t]*)\S.*$",
    re.IGNORECASE | re.MULTILINE,
)


def mask_secrets(text: str) -> str:
    """``text`` with credentials replaced by ``***``: the userinfo secret of every URI, and the
    value of every secret-looking key. The one rule for whatever tuner records or prints."""
    text = _URI_SECRET.sub(rf"\g<head>{MASK}@", text)
    return _SECRET_LINE.sub(rf"\g<key>{MASK}", text)
