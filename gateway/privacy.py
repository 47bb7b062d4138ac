"""Patient identifiers never leave the process in clear: the journal and the logs see a keyed hash."""

from __future__ import annotations

import hashlib
import hmac


def patient_hash(key: str, patient_key: str | None) -> str | None:
    """HMAC-SHA256 of the patient key (the INS, or ``ipp:authority|id``) under the deployment's secret key, hex, truncated to 32 chars (128 bits)."""
    if not patient_key:
        return None
    return hmac.new(key.encode(), patient_key.encode(), hashlib.sha256).hexdigest()[:32]
