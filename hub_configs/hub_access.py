"""Decide once per `mmhub` run whether the Hugging Face Hub is used, before anything imports `huggingface_hub`.

`huggingface_hub` reads `HF_HUB_OFFLINE` once, when it is imported, and without it every download against an
unreachable Hub is retried with back-off, each retry printed as a warning. So `mmhub` settles the question first:
a command that names no Hub repo runs offline outright; one that does asks the Hub once, briefly, and when there is
no answer says so in one line and runs offline on the local cache.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

# ORG/NAME or NAME, as Hub repo ids are spelled (no leading slash, no "..", no spaces).
HUB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
# Options of `mmhub` commands whose values may be Hub repo ids (the others are local paths or settings).
HUB_OPTIONS = ("model", "tokenizer", "clip", "clap")
PROBE_TIMEOUT_S = 3.0
# The probe runs in a child interpreter: there it can use huggingface_hub's own endpoint, proxy and TLS settings
# without this process importing huggingface_hub before the offline decision is made.
_PROBE = """
import sys
from huggingface_hub import constants, get_session

try:
    status = get_session().head(constants.ENDPOINT, timeout={timeout}).status_code
    reason = f"HTTP {{status}}" if status >= 500 else ""
except Exception as error:
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
print(constants.ENDPOINT + "\\t" + reason)
sys.exit(1 if reason else 0)
"""


_OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def offline_requested() -> bool:
    """True when the user already chose offline mode (`HF_HUB_OFFLINE` or `TRANSFORMERS_OFFLINE`)."""
    return any(os.environ.get(name, "").upper() in ("1", "ON", "YES", "TRUE") for name in _OFFLINE_VARIABLES)


def looks_like_hub_id(value: str) -> bool:
    """Whether `value` could be a Hub repo id rather than a local path (existing paths never are)."""
    return bool(HUB_ID_PATTERN.match(value)) and not os.path.exists(value) and not value.endswith(".pt")


def hub_references(args) -> list[str]:
    """The values of a parsed `mmhub` command line that name Hub repos."""
    values = (getattr(args, name, None) for name in HUB_OPTIONS)
    return [value for value in values if isinstance(value, str) and looks_like_hub_id(value)]


def probe_hub(timeout: float = PROBE_TIMEOUT_S) -> tuple[str, str]:
    """Ask the Hub once: `(endpoint, "")` when it answers, `(endpoint or "", reason)` when it does not."""
    environment = {key: value for key, value in os.environ.items() if key not in _OFFLINE_VARIABLES}
    try:
        done = subprocess.run(
            [sys.executable, "-c", _PROBE.format(timeout=timeout)],
            capture_output=True,
            text=True,
            timeout=timeout + 10,
            env=environment,
        )
    except subprocess.TimeoutExpired:
        return "", f"no answer within {timeout + 10:.0f} s"
    endpoint, _, reason = done.stdout.strip().partition("\t")
    if done.returncode != 0 and not reason:
        reason = (done.stderr.strip().splitlines() or ["the check itself failed"])[-1]
    return endpoint, reason


def settle_hub_access(args, *, needs_hub: bool = False) -> str | None:
    """Set `HF_HUB_OFFLINE=1` for this process unless the command names a Hub repo and the Hub answers.

    Args:
        args: The parsed command line (its `HUB_OPTIONS` values are checked for Hub ids).
        needs_hub: The command cannot work offline (uploads); an unreachable Hub is then an error.

    Returns:
        A one-line note for the user when the Hub was wanted but could not be reached, else None.

    Raises:
        ConnectionError: `needs_hub` and the Hub does not answer.
    """
    if offline_requested():
        return None
    if not needs_hub and not hub_references(args):
        # Nothing to fetch: make sure nothing tries.
        os.environ["HF_HUB_OFFLINE"] = "1"
        return None
    endpoint, reason = probe_hub()
    if not reason:
        return None
    where = f" at {endpoint}" if endpoint else ""
    if needs_hub:
        raise ConnectionError(f"the Hugging Face Hub{where} cannot be reached ({reason})")
    os.environ["HF_HUB_OFFLINE"] = "1"
    return f"The Hugging Face Hub{where} cannot be reached ({reason}); working offline from the local cache."
