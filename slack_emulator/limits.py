"""Block Kit limits, as Slack enforces them: pure functions, no I/O.

``block_kit_problems(blocks, surface=...)`` returns the problems Slack would report for a
list of blocks, each worded like Slack's own ``response_metadata.messages``
(``[ERROR] must be less than 3001 characters [json-pointer:/blocks/0/text/text]``). An
empty list means Slack would accept the blocks. ``modal_view_problems(view)`` does the
same for a modal view object (title, submit, close, callback_id, ... plus its blocks), and
``home_view_problems(view)`` for an App Home tab (``views.publish``: type ``home``, 100 blocks).

Sources: docs.slack.dev / api.slack.com Block Kit reference pages (blocks, block
elements, composition objects, modal views). Numbers not confirmed there are marked
"unconfirmed" where they are defined. Deliberate choices and gaps:

- ``action_id`` must be unique across the whole message/view here; Slack's docs only ask
  for uniqueness "among all other action_ids in the containing block" (stricter here).
- Empty ``plain_text`` is refused like empty ``mrkdwn``: both text objects are documented
  as "minimum length 1".
- Slack's undocumented cap on a message's total block payload (``msg_blocks_too_long``)
  is not emulated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

Surface = Literal["message", "modal", "home"]

MAX_MESSAGE_TEXT = 40_000  # chat.postMessage: "no more than 40,000 characters"
MAX_BLOCKS = {"message": 50, "modal": 100, "home": 100}
MAX_ID = 255  # block_id, action_id, callback_id, external_id
MAX_TEXT_OBJECT = 3000  # any text object: 1..3000 characters
MAX_SECTION_TEXT = 3000
MAX_SECTION_FIELDS = 10
MAX_SECTION_FIELD_TEXT = 2000
MAX_HEADER_TEXT = 150
MAX_CONTEXT_ELEMENTS = 10
MAX_ACTIONS_ELEMENTS = 25
MAX_BUTTON_TEXT = 75
MAX_BUTTON_VALUE = 2000
MAX_URL = 3000
MAX_ACCESSIBILITY_LABEL = 75
MAX_CONFIRM_TITLE = 100
MAX_CONFIRM_TEXT = 300
MAX_CONFIRM_BUTTON = 30
MAX_INPUT_LABEL = 2000
MAX_INPUT_HINT = 2000
MAX_INPUT_LENGTH = 3000  # plain_text_input min_length / max_length
MAX_PLACEHOLDER = 150
MAX_MARKDOWN_BLOCK = 12_000  # markdown block
MAX_IMAGE_ALT_TEXT = 2000  # unconfirmed
MAX_OPTIONS = 100  # static_select options; unconfirmed
MAX_OPTION_TEXT = 75  # option text; unconfirmed
MAX_OPTION_VALUE = 150  # option value; unconfirmed
OVERFLOW_OPTIONS = (1, 5)  # overflow menu: at most 5 options; unconfirmed
MAX_MODAL_TITLE = 24
MAX_MODAL_BUTTON = 24  # submit / close
MAX_PRIVATE_METADATA = 3000

BUTTON_STYLES = ("primary", "danger")

BLOCK_TYPES = frozenset(
    {
        "actions",
        "context",
        "context_actions",
        "divider",
        "file",
        "header",
        "image",
        "input",
        "markdown",
        "rich_text",
        "section",
        "table",
        "video",
    }
)
ELEMENT_TYPES = frozenset(
    {
        "button",
        "channels_select",
        "checkboxes",
        "conversations_select",
        "datepicker",
        "datetimepicker",
        "email_text_input",
        "external_select",
        "file_input",
        "image",
        "multi_channels_select",
        "multi_conversations_select",
        "multi_external_select",
        "multi_static_select",
        "multi_users_select",
        "number_input",
        "overflow",
        "plain_text_input",
        "radio_buttons",
        "rich_text_input",
        "static_select",
        "timepicker",
        "url_text_input",
        "users_select",
        "workflow_button",
    }
)
TEXT_TYPES = ("plain_text", "mrkdwn")


_BUTTON_STRINGS = (("value", MAX_BUTTON_VALUE), ("url", MAX_URL),
                   ("accessibility_label", MAX_ACCESSIBILITY_LABEL))
_VIEW_STRINGS = (("callback_id", MAX_ID), ("external_id", MAX_ID),
                 ("private_metadata", MAX_PRIVATE_METADATA))


def _ptr(path: str) -> str:
    return f"[json-pointer:{path}]"


class _Checker:
    """Walks blocks, collecting Slack-worded problems; ids are checked across the surface."""

    def __init__(self, surface: Surface) -> None:
        self.surface: Surface = surface
        self.problems: list[str] = []
        self.block_ids: dict[str, str] = {}
        self.action_ids: dict[str, str] = {}
        self.markdown_total = 0

    def error(self, message: str, path: str) -> None:
        self.problems.append(f"[ERROR] {message} {_ptr(path)}")

    def too_long(self, value: str, limit: int, path: str) -> None:
        if len(value) > limit:
            self.error(f"must be less than {limit + 1} characters", path)

    def optional_strings(self, obj: Mapping[str, Any], limits: Sequence[tuple[str, int]],
                         path: str) -> None:
        """Each of these fields, when present, is a string within its limit."""
        for field, limit in limits:
            value = obj.get(field)
            if value is None:
                continue
            if not isinstance(value, str):
                self.error("must be a string", f"{path}/{field}")
            else:
                self.too_long(value, limit, f"{path}/{field}")

    # -- composition objects --------------------------------------------------------------

    def text(
        self,
        obj: object,
        path: str,
        *,
        limit: int = MAX_TEXT_OBJECT,
        plain_only: bool = False,
        required: bool = True,
    ) -> None:
        if obj is None:
            if required:
                self.error("missing required field: text", path)
            return
        if not isinstance(obj, Mapping):
            self.error("must be a text object", path)
            return
        kind = obj.get("type")
        if kind not in TEXT_TYPES:
            self.error(f"must be one of the following: {', '.join(TEXT_TYPES)}", f"{path}/type")
        elif plain_only and kind != "plain_text":
            self.error("must be a plain_text text object", f"{path}/type")
        value = obj.get("text")
        if not isinstance(value, str):
            self.error("missing required field: text", f"{path}/text")
            return
        if value == "":
            self.error("must be more than 0 characters", f"{path}/text")
        self.too_long(value, limit, f"{path}/text")

    def confirm(self, obj: object, path: str) -> None:
        if not isinstance(obj, Mapping):
            self.error("must be a confirmation dialog object", path)
            return
        self.text(obj.get("title"), f"{path}/title", limit=MAX_CONFIRM_TITLE, plain_only=True)
        self.text(obj.get("text"), f"{path}/text", limit=MAX_CONFIRM_TEXT)
        self.text(obj.get("confirm"), f"{path}/confirm", limit=MAX_CONFIRM_BUTTON, plain_only=True)
        self.text(obj.get("deny"), f"{path}/deny", limit=MAX_CONFIRM_BUTTON, plain_only=True)
        self.style(obj, path)

    def style(self, obj: Mapping[str, Any], path: str) -> None:
        if "style" in obj and obj["style"] not in BUTTON_STYLES:
            self.error("must be one of the following: primary, danger", f"{path}/style")

    def options(self, options: object, path: str, *, bounds: tuple[int, int]) -> None:
        if not isinstance(options, list):
            self.error("must provide an array", path)
            return
        low, high = bounds
        if len(options) < low:
            self.error(f"must provide at least {low} items", path)
        if len(options) > high:
            self.error(f"must provide no more than {high} items", path)
        for i, option in enumerate(options):
            p = f"{path}/{i}"
            if not isinstance(option, Mapping):
                self.error("must be an option object", p)
                continue
            self.text(option.get("text"), f"{p}/text", limit=MAX_OPTION_TEXT)
            value = option.get("value")
            if isinstance(value, str):
                self.too_long(value, MAX_OPTION_VALUE, f"{p}/value")

    # -- ids ------------------------------------------------------------------------------

    def unique_id(self, kind: str, value: object, path: str, seen: dict[str, str]) -> None:
        if value is None:
            return
        if not isinstance(value, str) or value == "":
            self.error("must be a non-empty string", path)
            return
        self.too_long(value, MAX_ID, path)
        if value in seen:
            self.error(f"duplicate {kind} {value!r} (first at {seen[value]})", path)
        else:
            seen[value] = path

    # -- elements -------------------------------------------------------------------------

    def element(self, el: object, path: str) -> None:
        if not isinstance(el, Mapping):
            self.error("must be a block element object", path)
            return
        kind = el.get("type")
        if kind not in ELEMENT_TYPES:
            self.error(f"unsupported type: {kind!r}", f"{path}/type")
            return
        if kind == "image":  # image element: no action_id
            self.image_fields(el, path)
            return
        self.unique_id("action_id", el.get("action_id"), f"{path}/action_id", self.action_ids)
        if "confirm" in el:
            self.confirm(el["confirm"], f"{path}/confirm")
        if "placeholder" in el:
            self.text(
                el["placeholder"], f"{path}/placeholder", limit=MAX_PLACEHOLDER, plain_only=True
            )
        if kind == "button":
            self.button(el, path)
        elif kind == "plain_text_input":
            self.plain_text_input(el, path)
        elif kind in ("static_select", "multi_static_select", "checkboxes", "radio_buttons"):
            if "options" in el or "option_groups" not in el:
                self.options(el.get("options"), f"{path}/options", bounds=(1, MAX_OPTIONS))
        elif kind == "overflow":
            self.options(el.get("options"), f"{path}/options", bounds=OVERFLOW_OPTIONS)

    def button(self, el: Mapping[str, Any], path: str) -> None:
        self.text(el.get("text"), f"{path}/text", limit=MAX_BUTTON_TEXT, plain_only=True)
        self.optional_strings(el, _BUTTON_STRINGS, path)
        self.style(el, path)

    def plain_text_input(self, el: Mapping[str, Any], path: str) -> None:
        for field, low in (("min_length", 0), ("max_length", 1)):
            value = el.get(field)
            if value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool):
                self.error("must be an integer", f"{path}/{field}")
            elif not low <= value <= MAX_INPUT_LENGTH:
                self.error(f"must be between {low} and {MAX_INPUT_LENGTH}", f"{path}/{field}")

    def image_fields(self, el: Mapping[str, Any], path: str) -> None:
        alt = el.get("alt_text")
        if not isinstance(alt, str):
            self.error("missing required field: alt_text", f"{path}/alt_text")
        else:
            self.too_long(alt, MAX_IMAGE_ALT_TEXT, f"{path}/alt_text")
        url = el.get("image_url")
        if isinstance(url, str):
            self.too_long(url, MAX_URL, f"{path}/image_url")
        elif "slack_file" not in el:
            self.error("missing required field: image_url", f"{path}/image_url")

    # -- blocks ---------------------------------------------------------------------------

    def blocks(self, blocks: object, path: str) -> None:
        if not isinstance(blocks, list):
            self.error("must provide an array", path)
            return
        limit = MAX_BLOCKS[self.surface]
        if len(blocks) > limit:
            self.error(f"no more than {limit} items allowed", path)
        for i, block in enumerate(blocks):
            self.block(block, f"{path}/{i}")
        if self.markdown_total > MAX_MARKDOWN_BLOCK:
            self.error(
                f"markdown blocks must total less than {MAX_MARKDOWN_BLOCK + 1} characters", path
            )

    def block(self, block: object, path: str) -> None:
        if not isinstance(block, Mapping):
            self.error("must be a block object", path)
            return
        kind = block.get("type")
        if kind not in BLOCK_TYPES:
            self.error(f"unsupported type: {kind!r}", f"{path}/type")
            return
        self.unique_id("block_id", block.get("block_id"), f"{path}/block_id", self.block_ids)
        check = getattr(self, f"block_{kind}", None)
        if check is not None:
            check(block, path)

    def block_section(self, block: Mapping[str, Any], path: str) -> None:
        fields = block.get("fields")
        if "text" not in block and fields is None:
            self.error("must provide either text or fields", path)
        if "text" in block:
            self.text(block["text"], f"{path}/text", limit=MAX_SECTION_TEXT)
        if fields is not None:
            if not isinstance(fields, list):
                self.error("must provide an array", f"{path}/fields")
            else:
                if len(fields) > MAX_SECTION_FIELDS:
                    self.error(f"no more than {MAX_SECTION_FIELDS} items allowed", f"{path}/fields")
                for i, field in enumerate(fields):
                    self.text(field, f"{path}/fields/{i}", limit=MAX_SECTION_FIELD_TEXT)
        if "accessory" in block:
            self.element(block["accessory"], f"{path}/accessory")

    def block_header(self, block: Mapping[str, Any], path: str) -> None:
        self.text(block.get("text"), f"{path}/text", limit=MAX_HEADER_TEXT, plain_only=True)

    def block_context(self, block: Mapping[str, Any], path: str) -> None:
        elements = block.get("elements")
        if not isinstance(elements, list) or not elements:
            self.error("must provide at least 1 item", f"{path}/elements")
            return
        if len(elements) > MAX_CONTEXT_ELEMENTS:
            self.error(f"no more than {MAX_CONTEXT_ELEMENTS} items allowed", f"{path}/elements")
        for i, el in enumerate(elements):
            p = f"{path}/elements/{i}"
            if isinstance(el, Mapping) and el.get("type") == "image":
                self.image_fields(el, p)
            else:
                self.text(el, p)

    def block_actions(self, block: Mapping[str, Any], path: str) -> None:
        elements = block.get("elements")
        if not isinstance(elements, list) or not elements:
            self.error("must provide at least 1 item", f"{path}/elements")
            return
        if len(elements) > MAX_ACTIONS_ELEMENTS:
            self.error(f"no more than {MAX_ACTIONS_ELEMENTS} items allowed", f"{path}/elements")
        for i, el in enumerate(elements):
            self.element(el, f"{path}/elements/{i}")

    def block_input(self, block: Mapping[str, Any], path: str) -> None:
        self.text(block.get("label"), f"{path}/label", limit=MAX_INPUT_LABEL, plain_only=True)
        if "hint" in block:
            self.text(block["hint"], f"{path}/hint", limit=MAX_INPUT_HINT, plain_only=True)
        if "element" not in block:
            self.error("missing required field: element", f"{path}/element")
        else:
            self.element(block["element"], f"{path}/element")

    def block_image(self, block: Mapping[str, Any], path: str) -> None:
        self.image_fields(block, path)
        if "title" in block:
            self.text(block["title"], f"{path}/title", limit=MAX_IMAGE_ALT_TEXT, plain_only=True)

    def block_markdown(self, block: Mapping[str, Any], path: str) -> None:
        text = block.get("text")
        if not isinstance(text, str) or text == "":
            self.error("must be more than 0 characters", f"{path}/text")
            return
        self.markdown_total += len(text)


def block_kit_problems(blocks: object, *, surface: Surface = "message") -> list[str]:
    """Every reason Slack would refuse these blocks on this surface ([] when valid)."""
    checker = _Checker(surface)
    checker.blocks(blocks, "/blocks")
    return checker.problems


def message_text_problems(text: object) -> list[str]:
    """The top-level ``text`` of a message: at most 40,000 characters (``msg_too_long``)."""
    if isinstance(text, str) and len(text) > MAX_MESSAGE_TEXT:
        return [f"[ERROR] must be less than {MAX_MESSAGE_TEXT + 1} characters [json-pointer:/text]"]
    return []


def modal_view_problems(view: object) -> list[str]:
    """Every reason Slack would refuse this modal view (views.open/update/push)."""
    checker = _Checker("modal")
    if not isinstance(view, Mapping):
        checker.error("must be a view object", "/view")
        return checker.problems
    if view.get("type") != "modal":
        checker.error("must be one of the following: modal", "/view/type")
    checker.text(view.get("title"), "/view/title", limit=MAX_MODAL_TITLE, plain_only=True)
    for button in ("submit", "close"):
        if button in view:
            checker.text(view[button], f"/view/{button}", limit=MAX_MODAL_BUTTON, plain_only=True)
    checker.optional_strings(view, _VIEW_STRINGS, "/view")
    blocks = view.get("blocks")
    checker.blocks(blocks, "/view/blocks")
    has_input = isinstance(blocks, Sequence) and any(
        isinstance(b, Mapping) and b.get("type") == "input" for b in blocks
    )
    if has_input and "submit" not in view:
        checker.error("submit is required when an input block is within the blocks", "/view")
    return checker.problems


def home_view_problems(view: object) -> list[str]:
    """Every reason Slack would refuse this App Home view (views.publish)."""
    checker = _Checker("home")
    if not isinstance(view, Mapping):
        checker.error("must be a view object", "/view")
        return checker.problems
    if view.get("type") != "home":
        checker.error("must be one of the following: home", "/view/type")
    for button in ("submit", "close"):  # a tab has no submit or close button
        if button in view:
            checker.error(f"{button} is not allowed for a home view", f"/view/{button}")
    checker.optional_strings(view, _VIEW_STRINGS, "/view")
    checker.blocks(view.get("blocks"), "/view/blocks")
    return checker.problems
