"""The app's protocol with deadlines short enough for a test to wait them out."""

from __future__ import annotations

from webapp.web.protocol import GuardedHttpToolsProtocol


class QuickGuardedProtocol(GuardedHttpToolsProtocol):
    head_timeout = 1.0
    body_timeout = 1.5
