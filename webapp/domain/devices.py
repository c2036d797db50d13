"""What a User-Agent says, for people: "Firefox 121 on Windows".

Parsed with ua-parser (the maintained Python port of the uap-core rules) rather than
regular expressions of our own: browsers change their strings faster than a project
can follow. Its rules cost a worker about 7 MB, so they are loaded on first use (a
sign-in notice, the sessions page), and results are cached.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True, slots=True)
class Device:
    browser: str
    system: str

    def __str__(self) -> str:
        return f"{self.browser} on {self.system}"


@lru_cache(maxsize=512)
def describe(user_agent: str) -> Device:
    if not user_agent:
        return Device("Unknown browser", "an unknown system")
    from ua_parser import parse

    found = parse(user_agent[:512])
    agent, system = found.user_agent, found.os
    browser = agent.family if agent and agent.family != "Other" else "Unknown browser"
    if agent and agent.major and browser != "Unknown browser":
        browser += f" {agent.major}"
    name = system.family if system and system.family != "Other" else "an unknown system"
    return Device(browser, name)


def device_hash(device: str) -> str:
    """What is stored of a browser's device id."""
    return hashlib.sha256(device.encode()).hexdigest() if device else ""
