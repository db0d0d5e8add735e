"""The emulator's control surface over HTTP (``/_emulator/...``), for another process.

``EmulatorClient("http://127.0.0.1:PORT/")`` offers, as coroutines, what the in-process
``Emulator`` offers as plain methods: add channels and people, switch fault modes, read
the call log, messages, views and transcripts, and mint the tokens the sender needs.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

JSON = dict[str, Any]


class EmulatorError(RuntimeError):
    """The control API refused a request."""


class EmulatorClient:
    def __init__(self, base_url: str, *, timeout: float = 10.0) -> None:
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.timeout = timeout

    @property
    def api_url(self) -> str:
        return self.base_url + "api/"

    async def _request(
        self,
        verb: str,
        path: str,
        body: JSON | None = None,
        query: dict[str, str] | None = None,
        *,
        missing_ok: bool = False,
    ) -> Any:
        url = f"{self.base_url}_emulator/{path}"
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.request(verb, url, json=body, params=query) as res,
        ):
            if res.status == 404 and missing_ok:
                return None
            if res.content_type == "application/json":
                data = await res.json()
            else:
                data = await res.text()
            if res.status >= 400:
                raise EmulatorError(f"{verb} {path}: HTTP {res.status}: {data}")
            return data

    # -- directory ---------------------------------------------------------------------------

    async def identity(self) -> JSON:
        result: JSON = await self._request("GET", "identity")
        return result

    async def add_channel(
        self,
        channel_id: str,
        name: str,
        members: list[str] | None = None,
        *,
        bot_member: bool = True,
    ) -> None:
        await self._request(
            "POST",
            "channels",
            {"id": channel_id, "name": name, "members": members, "bot_member": bot_member},
        )

    async def set_bot_member(self, channel_id: str, member: bool) -> None:
        await self._request("POST", f"channels/{channel_id}/bot_member", {"member": member})

    async def channel(self, channel_id: str) -> JSON | None:
        result: JSON | None = await self._request("GET", f"channels/{channel_id}", missing_ok=True)
        return result

    async def add_user(
        self, user_id: str, name: str, real_name: str | None = None, tz: str = "Etc/UTC"
    ) -> None:
        await self._request(
            "POST", "users", {"id": user_id, "name": name, "real_name": real_name, "tz": tz}
        )

    async def user(self, user_id: str) -> JSON | None:
        result: JSON | None = await self._request("GET", f"users/{user_id}", missing_ok=True)
        return result

    async def add_usergroup(
        self, group_id: str, users: list[str], handle: str | None = None
    ) -> None:
        await self._request(
            "POST", "usergroups", {"id": group_id, "users": users, "handle": handle}
        )

    # -- fault modes -------------------------------------------------------------------------

    async def rate_limit(
        self, method: str | None = None, retry_after: int = 1, count: int | None = None
    ) -> None:
        await self._request(
            "POST", "rate_limit", {"method": method, "retry_after": retry_after, "count": count}
        )

    async def stop_rate_limit(self, method: str | None = None) -> None:
        await self._request("DELETE", "rate_limit", query={"method": method} if method else None)

    async def auto_rate_limit(self, enabled: bool = True, interval: float = 1.0) -> None:
        await self._request("POST", "auto_rate_limit", {"enabled": enabled, "interval": interval})

    async def slack_limits(
        self, enabled: bool = True, *, per_minute: dict[str, float] | None = None
    ) -> None:
        """Slack's limits mode on (or off): see ``Emulator.slack_limits``."""
        await self._request(
            "POST", "slack_limits", {"enabled": enabled, "per_minute": per_minute or {}}
        )

    async def limited_calls(self) -> JSON:
        """The calls Slack's limits saw (``calls``) and the 429s come back too early
        (``early``: pairs of the 429 and the call after it)."""
        result: JSON = await self._request("GET", "slack_limits")
        return result

    async def fail_all(self, status: int | None = 500, error: str = "fatal_error") -> None:
        await self._request("POST", "fail_all", {"status": status, "error": error})

    async def fail_method(
        self, method: str, error: str = "channel_not_found", count: int | None = 1
    ) -> None:
        await self._request(
            "POST", "fail_method", {"method": method, "error": error, "count": count}
        )

    async def clear_faults(self) -> None:
        await self._request("POST", "clear_faults")

    async def advance_time(self, seconds: float) -> None:
        await self._request("POST", "advance_time", {"seconds": seconds})

    # -- records -----------------------------------------------------------------------------

    async def calls(self, method: str | None = None) -> list[JSON]:
        data = await self._request("GET", "calls", query={"method": method} if method else None)
        calls: list[JSON] = data["calls"]
        return calls

    async def clear_calls(self) -> None:
        await self._request("DELETE", "calls")

    async def wait_for_call(self, method: str, *, count: int = 1, timeout: float = 5.0) -> JSON:
        """The ``count``-th call to ``method`` (polls; raises TimeoutError)."""
        deadline = time.monotonic() + timeout
        while True:
            calls = await self.calls(method)
            if len(calls) >= count:
                return calls[count - 1]
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{count} call(s) to {method} not seen within {timeout}s")
            await asyncio.sleep(0.02)

    async def messages(self, channel: str, *, include_ephemeral: bool = True) -> list[JSON]:
        data = await self._request(
            "GET",
            f"messages/{channel}",
            query={"include_ephemeral": "1" if include_ephemeral else "0"},
        )
        messages: list[JSON] = data["messages"]
        return messages

    async def message(self, channel: str, ts: str) -> JSON | None:
        result: JSON | None = await self._request(
            "GET", f"messages/{channel}/{ts}", missing_ok=True
        )
        return result

    async def post_user_message(
        self,
        channel: str,
        user_id: str,
        text: str,
        thread_ts: str | None = None,
        *,
        blocks: list[JSON] | None = None,
        attachments: list[JSON] | None = None,
    ) -> str:
        data = await self._request(
            "POST",
            f"messages/{channel}",
            {
                "user_id": user_id,
                "text": text,
                "thread_ts": thread_ts,
                "blocks": blocks,
                "attachments": attachments,
            },
        )
        ts: str = data["ts"]
        return ts

    async def post_bot_message(
        self,
        channel: str,
        bot_id: str,
        username: str,
        text: str,
        *,
        blocks: list[JSON] | None = None,
        attachments: list[JSON] | None = None,
    ) -> str:
        """Another app's bot posts in ``channel`` (CI's deploy message); its ts."""
        body = {"bot_id": bot_id, "username": username, "text": text, "blocks": blocks,
                "attachments": attachments}
        data = await self._request("POST", f"messages/{channel}", body)
        ts: str = data["ts"]
        return ts

    async def view(self, view_id: str) -> JSON | None:
        result: JSON | None = await self._request("GET", f"views/{view_id}", missing_ok=True)
        return result

    async def home(self, user_id: str) -> JSON | None:
        """The user's App Home view (``view``, ``published``: how many times), or None."""
        result: JSON | None = await self._request("GET", f"home/{user_id}", missing_ok=True)
        return result

    async def files(self) -> list[JSON]:
        data = await self._request("GET", "files")
        files: list[JSON] = data["files"]
        return files

    async def transcript(
        self, channel: str, *, include_threads: bool = True, viewer: str | None = None
    ) -> str:
        query = {"threads": "1" if include_threads else "0"}
        if viewer:
            query["viewer"] = viewer
        text: str = await self._request("GET", f"transcript/{channel}", query=query)
        return text

    # -- interactivity (what the sender needs) -----------------------------------------------

    async def mint_trigger_id(self, user_id: str) -> str:
        data = await self._request("POST", "triggers", {"user_id": user_id})
        trigger_id: str = data["trigger_id"]
        return trigger_id

    async def mint_response_url(
        self,
        channel_id: str | None,
        user_id: str,
        *,
        message_ts: str | None = None,
        ephemeral_original: bool = False,
        thread_ts: str | None = None,
    ) -> str:
        data = await self._request(
            "POST",
            "response_urls",
            {
                "channel_id": channel_id,
                "user_id": user_id,
                "message_ts": message_ts,
                "ephemeral_original": ephemeral_original,
                "thread_ts": thread_ts,
            },
        )
        url: str = data["response_url"]
        return url

    async def apply_command_answer(self, response_url: str, body: Any, command: str) -> None:
        answer = {"response_url": response_url, "body": body, "command": command}
        await self._request("POST", "response_urls/answer", answer)

    async def apply_command_failure(self, response_url: str, command: str, error: str) -> None:
        body = {"response_url": response_url, "command": command, "error": error}
        await self._request("POST", "response_urls/failure", body)

    async def apply_view_answer(self, view_id: str, values: JSON, body: Any) -> None:
        await self._request("POST", f"views/{view_id}/answer", {"values": values, "body": body})

    async def send(self, kind: str, **arguments: Any) -> JSON:
        """Have the emulator send a signed request itself (``--signing-secret``, ``--app-url``)."""
        result: JSON = await self._request("POST", f"send/{kind}", arguments)
        return result
