"""A local Slack for rollbot's tests and demo: Web API server, inbound request sender, limits.

- ``Emulator``: the Web API on 127.0.0.1 (``emu.api_url`` for slack_sdk's ``base_url``),
  the workspace state, the call log, fault modes, transcripts (``server``).
- ``SlackSender``: Slack's signed requests to the app: slash commands, button clicks,
  modal submissions, message shortcuts, events (``sender``).
- Socket Mode: ``apps.connections.open`` and the WebSocket (``emu.socket_send``, acks);
  ``SocketModeSender`` sends ``SlackSender``'s requests as envelopes (``socket_mode``).
- ``EmulatorClient``: the emulator's controls over HTTP, from another process (``client``).
- ``block_kit_problems`` / ``modal_view_problems`` / ``home_view_problems``: Block Kit limits,
  pure (``limits``).
- App Home: ``views.publish`` stores each user's tab (``emu.home_view(user)``); the senders'
  ``app_home_opened`` and ``home_action`` open it and click in it.

``python -m slack_emulator --port 0 ...`` runs it standalone (``__main__``).
"""

from slack_emulator.client import EmulatorClient, EmulatorError
from slack_emulator.limits import (
    block_kit_problems,
    home_view_problems,
    message_text_problems,
    modal_view_problems,
)
from slack_emulator.modes import CallRecord, RateLimitRule
from slack_emulator.sender import SendOptions, SendResult, SentRequest, SlackSender
from slack_emulator.server import Emulator
from slack_emulator.signing import signature, signed_headers, verify
from slack_emulator.socket_mode import (
    SocketAck,
    SocketConnection,
    SocketEnvelope,
    SocketModeSender,
    SocketSendResult,
)
from slack_emulator.state import Message, UploadedFile, View

__all__ = [
    "CallRecord",
    "Emulator",
    "EmulatorClient",
    "EmulatorError",
    "Message",
    "RateLimitRule",
    "SendOptions",
    "SendResult",
    "SentRequest",
    "SlackSender",
    "SocketAck",
    "SocketConnection",
    "SocketEnvelope",
    "SocketModeSender",
    "SocketSendResult",
    "UploadedFile",
    "View",
    "block_kit_problems",
    "home_view_problems",
    "message_text_problems",
    "modal_view_problems",
    "signature",
    "signed_headers",
    "verify",
]
