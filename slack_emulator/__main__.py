"""Run the emulator standalone, for a demo in another process.

    python -m slack_emulator --port 0 --signing-secret S --token xoxb-test \\
        --channel C0INCIDENTS:incidents --user U0ALICE:alice --usergroup S0ONCALL:U0ALICE

The first stdout line is ``SLACK_API_URL=http://127.0.0.1:PORT/api/``, the second
``SLACK_EMULATOR_URL=http://127.0.0.1:PORT/`` (controls under ``_emulator/``). Serves
until SIGTERM or SIGINT, then exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from slack_emulator.server import Emulator


def _pair(value: str) -> tuple[str, str]:
    key, sep, rest = value.partition(":")
    if not sep or not key or not rest:
        raise argparse.ArgumentTypeError(f"expected ID:VALUE, got {value!r}")
    return key, rest


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m slack_emulator", description="A local Slack Web API."
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0: a free port")
    p.add_argument("--token", default="xoxb-test", help="the bot token the API accepts")
    p.add_argument(
        "--app-token",
        action="append",
        default=[],
        help="an app-level token apps.connections.open accepts (Socket Mode)",
    )
    p.add_argument(
        "--signing-secret", help="lets POST /_emulator/send/... sign requests to the app"
    )
    p.add_argument("--app-url", help="the app's request URL for /_emulator/send/...")
    p.add_argument("--team-id", default="T0AZORA")
    p.add_argument("--bot-user-id", default="U0ROLLBOT")
    p.add_argument("--bot-name", default="rollbot")
    p.add_argument("--channel", action="append", type=_pair, default=[], metavar="ID:NAME")
    p.add_argument("--user", action="append", type=_pair, default=[], metavar="ID:NAME")
    p.add_argument("--usergroup", action="append", type=_pair, default=[], metavar="ID:U1,U2")
    p.add_argument("--auto-rate-limit", action="store_true", help="Slack-like 1 post/s per channel")
    return p.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    emu = Emulator(
        args.token,
        host=args.host,
        port=args.port,
        team_id=args.team_id,
        bot_user_id=args.bot_user_id,
        bot_name=args.bot_name,
        signing_secret=args.signing_secret,
        app_url=args.app_url,
        app_tokens=tuple(args.app_token),
    )
    for cid, name in args.channel:
        emu.add_channel(cid, name)
    for uid, name in args.user:
        emu.add_user(uid, name)
    for gid, users in args.usergroup:
        emu.add_usergroup(gid, [u for u in users.split(",") if u])
    if args.auto_rate_limit:
        emu.auto_rate_limit(True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with emu:
        print(f"SLACK_API_URL={emu.api_url}", flush=True)
        print(f"SLACK_EMULATOR_URL={emu.base_url}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    asyncio.run(serve(parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
